// One measured run: Postfix's smtp-source against a started server, with the server's process tree
// sampled from /proc. Any smtp-source error (non-zero exit, anything on stderr, a time-out) fails
// the run: a benchmark that silently measures refusals is worse than none.

import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { machineBusySeconds, pssKiB, sampleTree, selfCpuSeconds } from './proc.ts';
import { HOST } from './util.ts';

export type Cell = {
  sessions: number;
  messageBytes: number;
  /** false: one message per connection; true: smtp-source -d, many messages per connection. */
  reuseConnection: boolean;
  /** Messages per smtp-source invocation (its -m). */
  batch: number;
  /** Invocations per run, back to back; a run sends batch × batches messages. */
  batches: number;
  /** The envelope sender and From: field (smtp-source -f); default sender@example.org. */
  sender?: string;
};

export const cellMessages = (cell: Cell): number => cell.batch * cell.batches;

export type RunResult =
  | {
      ok: true;
      seconds: number;
      messages: number;
      cpuSeconds: number;
      peakPssKiB: number;
      /** Cores kept busy by anything but the server, smtp-source and the benchmark (other processes, steal), on average. */
      otherCores: number;
    }
  | { ok: false; error: string };

const SAMPLE_INTERVAL_MS = 250;
/** After the client is done, the server may still be working (Postfix's qmgr and discard run after the 250). */
const SETTLE_WINDOW_MS = 200;
const SETTLE_IDLE_CPU_SECONDS = 0.01;
const SETTLE_MAX_MS = 10_000;
/** Before a run, wait (up to the caller's limit) for the machine to be this quiet. */
const QUIET_WINDOW_MS = 500;
const QUIET_BUSY_CORES = 0.15;

/**
 * Waits until the whole machine uses less than QUIET_BUSY_CORES over a window, or `maxMs` passes.
 * Other work on the machine (a test suite, a build) would take CPU from the server under test.
 */
export async function waitForQuiet(maxMs: number): Promise<{ quiet: boolean; waitedMs: number }> {
  const startedAt = Date.now();
  for (;;) {
    const before = machineBusySeconds();
    await sleep(QUIET_WINDOW_MS);
    const busyCores = (machineBusySeconds() - before) / (QUIET_WINDOW_MS / 1000);
    const waitedMs = Date.now() - startedAt;
    if (busyCores < QUIET_BUSY_CORES) return { quiet: true, waitedMs };
    if (waitedMs >= maxMs) return { quiet: false, waitedMs };
  }
}

export function smtpSourceArgs(cell: Cell, port: number): string[] {
  return [
    ...(cell.reuseConnection ? ['-d'] : []),
    '-s', String(cell.sessions),
    '-m', String(cell.batch),
    '-l', String(cell.messageBytes),
    '-f', cell.sender ?? 'sender@example.org',
    '-t', 'user@bench.test',
    `${HOST}:${port}`,
  ];
}

function runClient(smtpSource: string, args: string[], timeoutMs: number): Promise<{ seconds: number; error?: string }> {
  return new Promise((resolve) => {
    const startedAt = performance.now();
    const child = spawn(smtpSource, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('latin1')));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('latin1')));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve({ seconds: 0, error: `smtp-source could not start: ${error.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const seconds = (performance.now() - startedAt) / 1000;
      const said = output.trim().split('\n')[0] ?? '';
      if (timedOut) resolve({ seconds, error: `timed out after ${timeoutMs / 1000} s${said ? `: ${said}` : ''}` });
      else if (code !== 0) resolve({ seconds, error: `smtp-source ${signal ?? `exit ${code}`}: ${said || 'no message'}` });
      else if (said !== '') resolve({ seconds, error: `smtp-source said: ${said}` });
      else resolve({ seconds });
    });
  });
}

export async function runLoad(smtpSource: string, port: number, cell: Cell, rootPid: number, invocationTimeoutMs: number): Promise<RunResult> {
  const startedAt = performance.now();
  const machineBefore = machineBusySeconds();
  const selfBefore = selfCpuSeconds();
  const before = sampleTree(rootPid);
  if (before.pids.length === 0) return { ok: false, error: 'server is not running' };
  let peakPssKiB = pssKiB(before.pids);
  const samplePss = () => {
    peakPssKiB = Math.max(peakPssKiB, pssKiB(sampleTree(rootPid).pids));
  };
  const sampler = setInterval(samplePss, SAMPLE_INTERVAL_MS);
  let seconds = 0;
  let error: string | undefined;
  try {
    for (let i = 0; i < cell.batches && error === undefined; i++) {
      const client = await runClient(smtpSource, smtpSourceArgs(cell, port), invocationTimeoutMs);
      seconds += client.seconds;
      error = client.error;
    }
  } finally {
    clearInterval(sampler);
  }
  samplePss();
  // Count the work the server still does for these messages, until its tree goes idle.
  let last = sampleTree(rootPid);
  for (const deadline = Date.now() + SETTLE_MAX_MS; Date.now() < deadline; ) {
    await sleep(SETTLE_WINDOW_MS);
    const now = sampleTree(rootPid);
    const busy = now.cpuSeconds - last.cpuSeconds;
    last = now;
    if (busy < SETTLE_IDLE_CPU_SECONDS) break;
    samplePss();
  }
  if (error !== undefined) return { ok: false, error };
  if (last.pids.length === 0) return { ok: false, error: 'server exited during the run' };
  const cpuSeconds = last.cpuSeconds - before.cpuSeconds;
  const otherSeconds = machineBusySeconds() - machineBefore - cpuSeconds - (selfCpuSeconds() - selfBefore);
  const otherCores = Math.max(0, otherSeconds) / ((performance.now() - startedAt) / 1000);
  return { ok: true, seconds, messages: cellMessages(cell), cpuSeconds, peakPssKiB, otherCores };
}
