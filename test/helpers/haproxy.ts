// A real HAProxy on loopback in front of a test server, in TCP mode, one frontend per backend
// line (send-proxy or send-proxy-v2, from a chosen source address), run in the foreground with its
// own config and stopped by PID. Resolves once every frontend accepts connections.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ownProcess } from './owned-process.ts';
import { freePort } from './ports.ts';

export const hasHaproxy = spawnSync('haproxy', ['-v'], { stdio: 'ignore' }).status === 0;

export type HaproxyFrontend = { serverPort: number; sendProxy: 'send-proxy' | 'send-proxy-v2'; source: string };

export type TestHaproxy = { ports: number[]; stop(): Promise<void> };

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

export async function startHaproxy(frontends: readonly HaproxyFrontend[]): Promise<TestHaproxy> {
  const ports: number[] = [];
  for (let i = 0; i < frontends.length; i++) ports.push(await freePort());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-haproxy-'));
  const cfg = path.join(dir, 'haproxy.cfg');
  writeFileSync(cfg, [
    'global', '    maxconn 50',
    'defaults', '    mode tcp', '    timeout connect 2s', '    timeout client 10s', '    timeout server 10s',
    ...frontends.flatMap((f, i) => [
      `frontend smtp_${i}`, `    bind 127.0.0.1:${ports[i]}`, `    default_backend mta_${i}`,
      `backend mta_${i}`, `    server mta 127.0.0.1:${f.serverPort} ${f.sendProxy} source ${f.source}`,
    ]),
    '',
  ].join('\n'));
  const haproxy = ownProcess(spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'ignore'] }));
  for (const port of ports) {
    for (let i = 0; i < 100 && !(await accepts(port)); i++) {
      assert.ok(!haproxy.isExited(), 'haproxy exited at start');
      await sleep(50);
    }
  }
  return {
    ports,
    async stop() {
      await haproxy.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
