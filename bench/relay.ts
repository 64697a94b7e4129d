// The relay benchmark: smtp-source -> server -> smtp-sink, end to end, for Portcullis and for
// Postfix in the same run, each queueing durably and delivering over SMTP to the same smtp-sink
// (a fixed next hop: Portcullis `smtp:[127.0.0.1]:PORT`, Postfix `relay_transport`). Measures
// accepted-and-delivered messages per second (from the first connection to the sink's count
// reaching the total), the server's CPU per message (its whole process tree, from /proc), and the
// drain lag: how long after the client's last 250 the last message reached the sink. Then, for
// each cell, the delivery latency at half that server's peak rate: a fresh server with its log
// on, smtp-source pacing each session (-w 1: one message per second per session, about as many
// sessions as half the peak rate, in ten processes started evenly over a second so that the
// arrivals do not come in one burst a second), and each message's time from acceptance to delivery read from
// the server's own log: Postfix's `delay=` (maillog), Portcullis's `delayMs` on `queue: delivered`.
//
//   npm run -s bench:relay -- [--quick] [--only portcullis,postfix] [--no-latency]
//
// Every load is bounded (a message count and a time limit); every process is stopped by its PID.

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
const USAGE = 'usage: npm run -s bench:relay -- [--quick] [--only portcullis,postfix] [--no-latency]';
/** Paced sessions at most (one message per second each). */
const MAX_PACED_SESSIONS = 500;
/** smtp-source processes per paced run, started evenly over a second. */
const PACED_GROUPS = 10;
/** Seconds of paced load per latency cell. */
const PACED_SECONDS = 6;

type Cell = { sessions: number; messageBytes: number; messages: number };
type Result = { ok: true; seconds: number; cpuSeconds: number; lagMs: number } | { ok: false; error: string };
type Latency = { ok: true; rate: number; peakRate: number; sessions: number; samples: number; p50Ms: number; p99Ms: number; maxMs: number } | { ok: false; error: string };

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, only: { type: 'string' }, 'no-latency': { type: 'boolean', default: false } } });
const isLatency = !(values['no-latency'] ?? false);
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

function runSource(smtpSource: string, cell: Cell, port: number, pacing: readonly string[] = []): Promise<{ error?: string; doneAt: number }> {
  const args = ['-s', String(cell.sessions), '-m', String(cell.messages), '-l', String(cell.messageBytes), ...pacing, '-f', 'sender@example.org', '-t', 'user@bench.test', `${HOST}:${port}`];
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

/** One server relaying everything to the sink; `withLog`: its per-message log on (latency). */
async function startServer(name: string, dir: string, repoDir: string, withLog: boolean): Promise<RunningServer & { deliveryLog: string }> {
  if (name === 'portcullis') {
    const nextHop = `"smtp:[${HOST}]:${SINK_PORT}"`;
    const s = await startPortcullis({
      port: PORTS.portcullis,
      scratchDir: dir,
      repoDir,
      debug: false,
      log,
      ...(withLog ? { logLevel: 'info' } : {}),
      routes: [`default = { via = ${nextHop}, tls = "none" }`, `local = { via = ${nextHop}, tls = "none" }`],
    });
    return { ...s, deliveryLog: s.logPath };
  }
  const s = await startPostfix({
    port: PORTS.postfix,
    scratchDir: dir,
    repoDir,
    debug: withLog,
    log,
    postfixMainCf: [`relay_transport = smtp:[${HOST}]:${SINK_PORT}`, `default_transport = smtp:[${HOST}]:${SINK_PORT}`, 'smtp_tls_security_level = none'],
  });
  return { ...s, deliveryLog: join(dir, 'postfix', 'maillog') };
}

/** Each delivered message's acceptance-to-delivery time, in ms, from the server's log. */
function deliveryDelays(name: string, logPath: string): number[] {
  if (!existsSync(logPath)) return [];
  const out: number[] = [];
  for (const line of readFileSync(logPath, 'utf8').split('\n')) {
    if (name === 'portcullis') {
      if (!line.includes('"queue: delivered"')) continue;
      const m = /"delayMs":(\d+)/.exec(line);
      if (m !== null) out.push(Number(m[1]));
    } else if (line.includes('status=sent')) {
      const m = /\bdelay=([0-9.]+)/.exec(line);
      if (m !== null) out.push(Number(m[1]) * 1000);
    }
  }
  return out;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/** Paced load at half of `peakRate` on a fresh server with its log on. */
async function measureLatency(name: string, scratch: string, repoDir: string, smtpSource: string, smtpSink: string, cell: Cell, peakRate: number): Promise<Latency> {
  // Each session sends one message per second plus the time the message takes: a few more
  // sessions than half the peak rate come closer to it (the rate reached is reported).
  const sessions = Math.max(1, Math.min(MAX_PACED_SESSIONS, Math.round((peakRate / 2) * 1.2)));
  const messages = sessions * PACED_SECONDS;
  const dir = join(scratch, `${name}-latency-${cell.sessions}-${cell.messageBytes}`);
  mkdirSync(dir, { mode: 0o755 });
  chmodSync(dir, 0o755);
  const sink = await startSink(smtpSink);
  let server: (RunningServer & { deliveryLog: string }) | undefined;
  try {
    server = await startServer(name, dir, repoDir, true);
    const startedAt = performance.now();
    // smtp-source starts its sessions together and -w keeps them in step: one burst a second.
    // PACED_GROUPS processes started evenly over a second spread the arrivals instead.
    const groups = Math.min(PACED_GROUPS, sessions);
    const runs: Array<Promise<{ error?: string }>> = [];
    for (let g = 0; g < groups; g++) {
      const groupSessions = Math.floor(sessions / groups) + (g < sessions % groups ? 1 : 0);
      runs.push(sleep((g * 1000) / groups).then(() => runSource(smtpSource, { ...cell, sessions: groupSessions, messages: groupSessions * PACED_SECONDS }, PORTS[name as 'portcullis' | 'postfix'], ['-w', '1'])));
    }
    const failed = (await Promise.all(runs)).find((r) => r.error !== undefined);
    if (failed?.error !== undefined) return { ok: false, error: failed.error };
    const deadline = Date.now() + 120_000;
    while (sink.count() < messages && Date.now() < deadline) await sleep(20);
    const rate = messages / ((performance.now() - startedAt) / 1000);
    // The log line follows the delivery (Portcullis: once its record is durable).
    let delays: number[] = [];
    for (let i = 0; i < 50 && delays.length < messages; i++) {
      await sleep(100);
      delays = deliveryDelays(name, server.deliveryLog);
    }
    if (delays.length < messages) return { ok: false, error: `${delays.length} of ${messages} deliveries in the log` };
    delays.sort((a, b) => a - b);
    return { ok: true, rate, peakRate, sessions, samples: delays.length, p50Ms: percentile(delays, 50), p99Ms: percentile(delays, 99), maxMs: delays[delays.length - 1] };
  } finally {
    await server?.stop();
    await sink.stop();
  }
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
  const latencies = new Map<string, Latency>();
  try {
    for (const name of servers) {
      const sink = await startSink(smtpSink);
      let server: RunningServer | undefined;
      try {
        const dir = join(scratch, name);
        mkdirSync(dir, { mode: 0o755 });
        chmodSync(dir, 0o755);
        server = await startServer(name, dir, repoDir, false);
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
    if (isLatency) {
      for (const name of servers) {
        for (const cell of cells) {
          const r = results.get(`${name} ${cell.sessions} ${cell.messageBytes}`);
          if (r?.ok !== true) continue;
          const l = await measureLatency(name, scratch, repoDir, smtpSource, smtpSink, cell, cell.messages / r.seconds);
          latencies.set(`${name} ${cell.sessions} ${cell.messageBytes}`, l);
          log(`${name} latency (${cell.sessions} sessions ${cell.messageBytes} B cell): ${l.ok ? `${l.sessions} paced sessions, ${l.rate.toFixed(0)} msgs/s, p50 ${l.p50Ms.toFixed(0)} ms, p99 ${l.p99Ms.toFixed(0)} ms, max ${l.maxMs.toFixed(0)} ms (${l.samples} messages)` : l.error}`);
        }
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
  if (isLatency) {
    out += '\nDelivery latency at half each server\'s peak rate (acceptance to delivery, from its log):\n\n';
    out += '| cell | Portcullis msgs/s | p50 ms | p99 ms | Postfix msgs/s | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n';
    for (const cell of cells) {
      const col = (name: string): string => {
        const l = latencies.get(`${name} ${cell.sessions} ${cell.messageBytes}`);
        return l?.ok === true ? `${l.rate.toFixed(0)} (${((100 * l.rate) / l.peakRate).toFixed(0)} % of peak) | ${l.p50Ms.toFixed(0)} | ${l.p99Ms.toFixed(0)}` : '- | - | -';
      };
      out += `| ${cell.sessions} x ${cell.messageBytes / 1024} KiB | ${col('portcullis')} | ${col('postfix')} |\n`;
    }
  }
  process.stdout.write(out);
  return [...results.values()].every((r) => r.ok) && [...latencies.values()].every((l) => l.ok) ? 0 : 1;
}

process.exitCode = await main();
