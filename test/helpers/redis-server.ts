// Starts a real redis-server for the state-store tests: a free loopback port, a mkdtemp dir, no
// persistence, its stdio and log in files in that dir; ready once it answers PING.
// Owns only the process it spawned: stops it by that PID, never by name, and removes its dir.
// Never skips: a missing redis-server fails the test (scripts/test-deps.sh installs it).

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ownProcess } from './owned-process.ts';
import { freePort } from './ports.ts';

export type RedisTestServer = { url: string; port: number; dir: string; stop: () => Promise<void> };

const READY_TIMEOUT_MS = 5000;

export async function startRedisServer(): Promise<RedisTestServer> {
  // Another process may take the free port between our probe and redis's bind: retry a few times.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce();
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError;
}

async function startOnce(): Promise<RedisTestServer> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-redis-'));
  const logFile = path.join(dir, 'redis.log');
  const stdioFile = path.join(dir, 'stdio.log');
  const stdio = openSync(stdioFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
      '--daemonize', 'no', '--logfile', logFile, '--pidfile', path.join(dir, 'redis.pid'),
    ], { stdio: ['ignore', stdio, stdio] });
  } finally {
    closeSync(stdio);
  }
  const owned = ownProcess(child);
  const stop = async () => {
    await owned.stop();
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!(await answersPing(port))) {
    if (owned.isExited() || Date.now() > deadline) {
      const spawnError = owned.spawnError();
      const why = spawnError !== null ? String(spawnError) : owned.isExited() ? 'redis-server exited' : 'no PONG in time';
      const log = readLog(logFile) + readLog(stdioFile);
      await stop();
      throw new Error(`redis-server did not start on port ${port}: ${why}\n${log}`);
    }
    await sleep(50);
  }
  return { url: `redis://127.0.0.1:${port}/0`, port, dir, stop };
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8').slice(-4000);
  } catch {
    return '';
  }
}

/** One RESP PING over a raw socket, bounded in time. */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (ok: boolean) => { socket.destroy(); resolve(ok); };
    socket.setTimeout(500, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}
