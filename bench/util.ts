// Small helpers the benchmark's server starters share: SMTP readiness, commands with a time limit,
// and stopping a process we started by its PID. Never signals a process it was not handed.

import { execFile, execFileSync, spawn } from 'node:child_process';
import { accessSync, closeSync, constants, existsSync, openSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { isRunning, sampleTree } from './proc.ts';

export const HOST = '127.0.0.1';

/** One connection attempt: the first banner line, or undefined if nothing is listening. */
function readBanner(port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host: HOST, port });
    let buffered = '';
    const done = (line: string | undefined) => {
      socket.destroy();
      resolve(line);
    };
    socket.setTimeout(timeoutMs, () => done(buffered === '' ? 'no banner' : buffered));
    socket.on('error', () => done(undefined));
    socket.on('data', (chunk) => {
      buffered += chunk.toString('latin1');
      // RFC 5321 4.2.1: the last line of a multiline reply has a space after the code.
      const last = /^(\d{3}) .*\r?\n/m.exec(buffered);
      if (last !== null) {
        socket.write('QUIT\r\n');
        done(last[0].trimEnd());
      }
    });
  });
}

function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: HOST, port });
    socket.on('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

/** Waits up to `timeoutMs` for nothing to listen on the port (a stopped server may take a moment). */
export async function waitForFreePort(port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (await acceptsConnections(port)) {
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
  return true;
}

/** Waits up to `timeoutMs` for something to accept connections on the port (a non-SMTP server). */
export async function waitForListener(port: number, timeoutMs: number, failure: () => string | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await acceptsConnections(port))) {
    const reason = failure();
    if (reason !== undefined) throw new Error(reason);
    if (Date.now() > deadline) throw new Error(`nothing listened on ${HOST}:${port} within ${timeoutMs / 1000} s`);
    await sleep(50);
  }
}

/**
 * Polls until the port answers with a 220 banner. `failure` is asked between attempts and stops the
 * wait early with its reason (e.g. the server process exited).
 */
export async function waitForBanner(port: number, timeoutMs: number, failure: () => string | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'nothing listening';
  while (Date.now() < deadline) {
    const reason = failure();
    if (reason !== undefined) throw new Error(reason);
    const line = await readBanner(port, 2000);
    if (line !== undefined) {
      if (line.startsWith('220')) return;
      last = `banner was "${line}"`;
    }
    await sleep(50);
  }
  throw new Error(`no 220 banner on ${HOST}:${port} within ${timeoutMs / 1000} s (${last})`);
}

/** `code` is null when the command was killed (time limit) or could not start. */
export type CommandResult = { code: number | null; stdout: string; stderr: string };

/** Runs a command to completion (no shell), killing it after `timeoutMs`. */
export function runCommand(
  file: string,
  args: string[],
  options: { timeoutMs: number; cwd?: string; env?: NodeJS.ProcessEnv },
): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      { timeout: options.timeoutMs, killSignal: 'SIGKILL', cwd: options.cwd, env: options.env, maxBuffer: 16 << 20 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end();
  });
}

export type Spawned = { pid: number; exitReason: () => string | undefined };

/** Starts a long-running server with stdin closed and stdout+stderr appended to `logPath`. */
export function spawnLogged(file: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; logPath: string }): Spawned {
  const fd = openSync(options.logPath, 'a');
  const child = spawn(file, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  let exit: string | undefined;
  child.on('exit', (code, signal) => {
    exit = `exited with ${signal ?? `code ${code}`}${lastLines(options.logPath)}`;
  });
  child.on('error', (error) => {
    exit = `could not start: ${error.message}`;
  });
  if (child.pid === undefined) throw new Error(`could not start ${file}`);
  return { pid: child.pid, exitReason: () => exit };
}

/** The last lines of a log, formatted to follow a failure reason. */
export function lastLines(path: string, count = 3): string {
  if (!existsSync(path)) return '';
  const lines = readFileSync(path, 'utf8').trim().split('\n').filter((line) => line.trim() !== '');
  return lines.length === 0 ? '' : `: ${lines.slice(-count).join(' | ')}`;
}

export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isRunning(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}

/**
 * SIGTERM to the root we started, SIGKILL if it is still there after `graceMs`; then SIGKILL any of
 * its descendants (seen just before the stop) that outlived it, and wait until all are gone, so
 * the next server can have the port.
 */
export async function stopTree(rootPid: number, graceMs = 10_000): Promise<void> {
  const { pids } = sampleTree(rootPid);
  signal(rootPid, 'SIGTERM');
  if (!(await waitForExit(rootPid, graceMs))) {
    signal(rootPid, 'SIGKILL');
    await waitForExit(rootPid, 2000);
  }
  for (const pid of pids) {
    if (pid !== rootPid && isRunning(pid)) signal(pid, 'SIGKILL');
  }
  for (const pid of pids) await waitForExit(pid, 2000);
}

/** Finds an executable on PATH or in the sbin directories a non-root PATH may lack. */
export function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'].filter((dir) => dir.startsWith('/'));
  return dirs.map((dir) => `${dir}/${name}`).find((path) => {
    try {
      accessSync(path, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** The commit measured, marked when the work tree differs from it. */
export function commitOf(repoDir: string): string {
  try {
    const git = (...args: string[]) => execFileSync('git', ['-C', repoDir, ...args], { encoding: 'utf8' }).trim();
    const dirty = git('status', '--porcelain', '--untracked-files=no', '--', 'src') !== '';
    return `${git('rev-parse', '--short', 'HEAD')}${dirty ? ' + uncommitted changes in src/' : ''}`;
  } catch {
    return 'unknown';
  }
}
