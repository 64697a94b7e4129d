// The relay benchmark: smtp-source -> server -> smtp-sink, end to end, for Portcullis and for
// Postfix in the same run, each queueing durably and delivering over SMTP to the same smtp-sink
// (a fixed next hop: Portcullis `smtp:[127.0.0.1]:PORT`, Postfix `relay_transport`). Measures
// accepted-and-delivered messages per second (from the first connection to the sink's count
// reaching the total), the server's CPU per message (its whole process tree, from /proc), and the
// drain lag: how long after the client's last 250 the last message reached the sink.
//
//   npm run -s bench:relay -- [--quick] [--only portcullis,postfix]
//
// Every load is bounded (a message count and a time limit); every process is stopped by its PID.

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { sampleTree } from './proc.ts';
import { startPortcullis } from './portcullis.ts';
import { startPostfix } from './postfix.ts';
import { PORTS, type RunningServer } from './servers.ts';
import { findExecutable, HOST, waitForFreePort } from './util.ts';

const SINK_PORT = 2631;
const USAGE = 'usage: npm run -s bench:relay -- [--quick] [--only portcullis,postfix]';

type Cell = { sessions: number; messageBytes: number; messages: number };
type Result = { ok: true; seconds: number; cpuSeconds: number; lagMs: number } | { ok: false; error: string };

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, only: { type: 'string' } } });
const quick = values.quick ?? false;
const servers = (values.only ?? 'portcullis,postfix').split(',').map((s) => s.trim());
if (servers.some((s) => s !== 'portcullis' && s !== 'postfix')) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(2);
}
const cells: Cell[] = [];
for (const sessions of [20, 100]) for (const messageBytes of [1024, 65536]) cells.push({ sessions, messageBytes, messages: quick ? 500 : 2000 });
const log = (line: string): void => void process.stderr.write(`${line}\n`);

type Sink = { count: () => number; stop: () => Promise<void> };

/** smtp-sink with its running counter (-c): "sess=.. quit=.. mesg=N" lines separated by CR. */
async function startSink(smtpSink: string): Promise<Sink> {
  if (!(await waitForFreePort(SINK_PORT, 10_000))) throw new Error(`port ${SINK_PORT} is in use`);
  const child: ChildProcess = spawn(smtpSink, ['-u', 'nobody', '-c', `${HOST}:${SINK_PORT}`, '1000'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let count = 0;
  let tail = '';
  child.stdout!.on('data', (d: Buffer) => {
    tail = (tail + d.toString('latin1')).slice(-200);
    const all = [...tail.matchAll(/mesg=(\d+)/g)];
    if (all.length > 0) count = Math.max(count, Number(all[all.length - 1][1]));
  });
  child.stderr!.on('data', (d: Buffer) => log(`smtp-sink: ${d.toString('latin1').trim()}`));
  await sleep(300);
  return {
    count: () => count,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

function runSource(smtpSource: string, cell: Cell, port: number): Promise<{ error?: string; doneAt: number }> {
  const args = ['-s', String(cell.sessions), '-m', String(cell.messages), '-l', String(cell.messageBytes), '-f', 'sender@example.org', '-t', 'user@bench.test', `${HOST}:${port}`];
  return new Promise((resolve) => {
    const child = spawn(smtpSource, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let said = '';
    child.stdout.on('data', (d: Buffer) => (said += d.toString('latin1')));
    child.stderr.on('data', (d: Buffer) => (said += d.toString('latin1')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ ...(code !== 0 || said.trim() !== '' ? { error: `smtp-source exit ${code}: ${said.trim().split('\n')[0] ?? ''}` } : {}), doneAt: performance.now() });
    });
  });
}

async function measure(name: string, server: RunningServer, sink: Sink, smtpSource: string, cell: Cell): Promise<Result> {
  const base = sink.count();
  const before = sampleTree(server.rootPid);
  const startedAt = performance.now();
  const source = await runSource(smtpSource, cell, PORTS[name as 'portcullis' | 'postfix']);
  if (source.error !== undefined) return { ok: false, error: source.error };
  const deadline = Date.now() + 300_000;
  while (sink.count() - base < cell.messages && Date.now() < deadline) await sleep(20);
  const deliveredAt = performance.now();
  if (sink.count() - base < cell.messages) return { ok: false, error: `only ${sink.count() - base} of ${cell.messages} delivered within 300 s` };
  const after = sampleTree(server.rootPid);
  return { ok: true, seconds: (deliveredAt - startedAt) / 1000, cpuSeconds: after.cpuSeconds - before.cpuSeconds, lagMs: Math.max(0, deliveredAt - source.doneAt) };
}

async function main(): Promise<number> {
  const smtpSource = findExecutable('smtp-source');
  const smtpSink = findExecutable('smtp-sink');
  if (smtpSource === undefined || smtpSink === undefined) {
    log('smtp-source/smtp-sink not found: they ship in the postfix package (bash scripts/test-deps.sh installs it)');
    return 1;
  }
  const repoDir = join(import.meta.dirname, '..');
  const scratch = mkdtempSync(join(tmpdir(), 'portcullis-relay-bench-'));
  chmodSync(scratch, 0o755);
  const results = new Map<string, Result>();
  try {
    for (const name of servers) {
      const sink = await startSink(smtpSink);
      let server: RunningServer | undefined;
      try {
        const dir = join(scratch, name);
        mkdirSync(dir, { mode: 0o755 });
        chmodSync(dir, 0o755);
        if (name === 'portcullis') {
          const nextHop = `"smtp:[${HOST}]:${SINK_PORT}"`;
          server = await startPortcullis({ port: PORTS.portcullis, scratchDir: dir, repoDir, debug: false, log, routes: [`default = { via = ${nextHop}, tls = "none" }`, `local = { via = ${nextHop}, tls = "none" }`] });
        } else {
          server = await startPostfix({
            port: PORTS.postfix,
            scratchDir: dir,
            repoDir,
            debug: false,
            log,
            postfixMainCf: [`relay_transport = smtp:[${HOST}]:${SINK_PORT}`, `default_transport = smtp:[${HOST}]:${SINK_PORT}`, 'smtp_tls_security_level = none'],
          });
        }
        log(`${name} ${server.version}`);
        for (const cell of cells) {
          const r = await measure(name, server, sink, smtpSource, cell);
          results.set(`${name} ${cell.sessions} ${cell.messageBytes}`, r);
          log(`${name} ${cell.sessions} sessions ${cell.messageBytes} B: ${r.ok ? `${(cell.messages / r.seconds).toFixed(0)} msgs/s, ${((r.cpuSeconds / cell.messages) * 1000).toFixed(2)} ms CPU/msg, lag ${r.lagMs.toFixed(0)} ms` : r.error}`);
        }
      } finally {
        await server?.stop();
        await sink.stop();
      }
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  // The table: msgs/s (delivered), CPU ms per message, drain lag; ratio to Postfix in the same run.
  let out = '| sessions | size | Portcullis msgs/s | Postfix msgs/s | ratio | Portcullis CPU ms/msg | Postfix CPU ms/msg | Portcullis lag ms | Postfix lag ms |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n';
  for (const cell of cells) {
    const p = results.get(`portcullis ${cell.sessions} ${cell.messageBytes}`);
    const f = results.get(`postfix ${cell.sessions} ${cell.messageBytes}`);
    const rate = (r: Result | undefined): number | null => (r?.ok === true ? cell.messages / r.seconds : null);
    const cpu = (r: Result | undefined): string => (r?.ok === true ? ((r.cpuSeconds / cell.messages) * 1000).toFixed(2) : '-');
    const lag = (r: Result | undefined): string => (r?.ok === true ? r.lagMs.toFixed(0) : '-');
    const rp = rate(p);
    const rf = rate(f);
    out += `| ${cell.sessions} | ${cell.messageBytes / 1024} KiB | ${rp?.toFixed(0) ?? '-'} | ${rf?.toFixed(0) ?? '-'} | ${rp !== null && rf !== null ? (rp / rf).toFixed(2) : '-'} | ${cpu(p)} | ${cpu(f)} | ${lag(p)} | ${lag(f)} |\n`;
  }
  process.stdout.write(out);
  return [...results.values()].every((r) => r.ok) ? 0 : 1;
}

process.exitCode = await main();
