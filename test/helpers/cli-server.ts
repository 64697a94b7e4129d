// Starts the real `portcullis serve` CLI as a child process, on a free loopback port, with its
// own config, spool and log file in a temp dir, for tests that need the real process (workers,
// signals, kill -9, restart). Only ever signals the PID it spawned (with `processGroup`, the process
// group that PID leads: the server and the workers it forked); never touches other processes.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { testCerts } from './server.ts';
import { freePort } from './ports.ts';
import { SmtpClient } from './smtp-client.ts';

/** The CLI entry point, run with this process's Node (24: type stripping). */
export const CLI_MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
/** The repository root: the child's working directory. */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

const READY_TIMEOUT_MS = 15_000;
/** The primary's "ready" line, in the JSON or the pretty log format. */
const READY_LINE = /"msg":"ready"|\] INFO: ready \{/;
const STOP_TIMEOUT_MS = 20_000;
/** The discard port: nothing listens on it here, so a delivery there is refused and deferred. */
const DEFER_PORT = 9;

export type CliServerOptions = {
  /** smtp.workers: 1 serves in-process; N forks N workers sharing the listener. */
  workers: number;
  /** relay.networks; omitted means the embedded default (loopback may relay). */
  relayNetworks?: string[];
  /** spool.journal_max_message_bytes; omitted means the embedded default. */
  journalMaxMessageBytes?: number;
  /** The [routes] table as TOML lines. Omitted: every route defers (a closed loopback port), so
   *  accepted mail stays queued and in the spool, as the tests of accepting expect, and nothing
   *  is written outside the temp dir. */
  routes?: string[];
  /** domains.local; omitted means ["example.test"]. */
  localDomains?: string[];
  /** More TOML appended to the file: other sections ([policy], [dns], [[dnsbl]] ...). */
  extraToml?: string;
  /** spool.dir; omitted means `spool` in the temp dir. The caller owns (and removes) it. */
  spoolDir?: string;
  /** More keys of the [spool] section, as TOML lines (`min_free_bytes = 0`). */
  spoolToml?: string[];
  /** More keys of the [smtp] section, as TOML lines (`bare_line_endings = "normalize"`). */
  smtpToml?: string[];
  /** More keys of the [log] section (`format = "pretty"`). */
  logToml?: string[];
  /** How the server is started: `node` (default) runs the CLI with this process's Node; `npx`
   *  and `npm-start` run the commands docs/operations.md shows (npm then owns the spawned PID). */
  launcher?: Launcher;
  /** Start the server as the leader of its own process group (spawn `detached`), so that
   *  killGroup() can SIGKILL the primary and every worker it forked at once, as a power cut or
   *  the OOM killer taking the whole service would. Only with the `node` launcher. */
  processGroup?: boolean;
};

export type Launcher = 'node' | 'npx' | 'npm-start';

function commandLine(launcher: Launcher, configPath: string): [string, string[]] {
  switch (launcher) {
    case 'node':
      return [process.execPath, [CLI_MAIN, 'serve', '--config', configPath]];
    case 'npx':
      return ['npx', ['node', 'src/cli/main.ts', 'serve', '--config', configPath]];
    case 'npm-start':
      return ['npm', ['start', '--', '--config', configPath]];
  }
}

export type ExitInfo = { code: number | null; signal: NodeJS.Signals | null };

export type CliServer = {
  port: number;
  dir: string;
  spoolDir: string;
  configPath: string;
  logPath: string;
  pid: number;
  /** Resolves when the spawned process has exited. */
  exited: Promise<ExitInfo>;
  /** Sends `signal` (default SIGTERM) to the spawned PID and waits for it to exit (bounded;
   *  then SIGKILL). Resolves with how it exited. A no-op when it has already exited. */
  stop: (signal?: NodeJS.Signals) => Promise<ExitInfo>;
  /** SIGKILL to the whole process group the spawned PID leads (needs `processGroup`): the primary
   *  and its workers die together. Resolves once the primary has exited and none of the workers
   *  this run logged as listening is alive (bounded). */
  killGroup: () => Promise<ExitInfo>;
  /** The PIDs of the workers of this run (from their `listening` log lines). */
  workerPids: () => number[];
  /** Everything the server has logged so far (all runs on this dir). */
  logText: () => string;
  /** Starts the server again on the same config, port, spool and log file (after stop()). */
  restart: () => Promise<CliServer>;
  /** stop() if still running, then remove the temp dir. */
  cleanup: () => Promise<void>;
};

const running = new Set<ChildProcess>();
/** Spawned PIDs that lead their own process group: the exit hook kills the whole group. */
const groupLeaders = new Set<number>();
let exitHookInstalled = false;

/** If the test process dies with a server still up, take down only the ones we spawned. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of running) {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        try {
          process.kill(groupLeaders.has(child.pid) ? -child.pid : child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  });
}

function toml(s: string): string {
  return JSON.stringify(s);
}

function configText(opts: CliServerOptions, port: number, spoolDir: string): string {
  const { certFile, keyFile } = testCerts();
  const lines = [
    '[smtp]',
    `listen = [${toml(`127.0.0.1:${port}`)}]`,
    'hostname = "mx.example.test"',
    `workers = ${opts.workers}`,
    ...(opts.smtpToml ?? []),
    '',
    '[tls]',
    `cert = ${toml(certFile)}`,
    `key = ${toml(keyFile)}`,
    '',
    '[domains]',
    `local = [${(opts.localDomains ?? ['example.test']).map(toml).join(', ')}]`,
    '',
  ];
  lines.push('[routes]', ...(opts.routes ?? [`default = "smtp:[127.0.0.1]:${DEFER_PORT}"`, `local = "smtp:[127.0.0.1]:${DEFER_PORT}"`]), '');
  if (opts.relayNetworks !== undefined) {
    lines.push('[relay]', `networks = [${opts.relayNetworks.map(toml).join(', ')}]`, '');
  }
  lines.push('[spool]', `dir = ${toml(spoolDir)}`);
  if (opts.journalMaxMessageBytes !== undefined) lines.push(`journal_max_message_bytes = ${opts.journalMaxMessageBytes}`);
  lines.push(...(opts.spoolToml ?? []));
  lines.push('', '[log]', 'level = "info"', ...(opts.logToml ?? []), '');
  if (opts.extraToml !== undefined) lines.push(opts.extraToml, '');
  return lines.join('\n');
}

/** Connects once; resolves with the first line the server sends (or rejects). */
async function readBanner(port: number, timeoutMs: number): Promise<string> {
  const client = await SmtpClient.connect(port);
  try {
    const line = await client.line(timeoutMs);
    if (line === null) throw new Error('closed before a banner');
    client.end('QUIT\r\n');
    return line;
  } catch (err) {
    client.close();
    throw err;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type Layout = { dir: string; spoolDir: string; configPath: string; logPath: string; port: number };

/** Whether `pid` is a live process (a zombie, dead but not yet reaped, counts as gone). */
function isLive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

const GROUP_EXIT_TIMEOUT_MS = 10_000;

async function launch(layout: Layout, workers: number, launcher: Launcher, isGroup: boolean): Promise<CliServer> {
  if (isGroup && launcher !== 'node') throw new Error('processGroup needs the node launcher (npm and npx own the spawned PID)');
  installExitHook();
  const logFd = openSync(layout.logPath, 'a');
  const logStart = (() => {
    try {
      return readFileSync(layout.logPath).length;
    } catch {
      return 0;
    }
  })();
  let child: ChildProcess;
  try {
    // stdio to the log file, never a pipe the child could block on.
    const [command, args] = commandLine(launcher, layout.configPath);
    child = spawn(command, args, {
      cwd: REPO_ROOT,
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, NODE_OPTIONS: '' },
      detached: isGroup,
    });
  } finally {
    closeSync(logFd);
  }
  if (child.pid === undefined) throw new Error('could not spawn the CLI server');
  const pid = child.pid;
  running.add(child);
  if (isGroup) groupLeaders.add(pid);
  let exitInfo: ExitInfo | null = null;
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      running.delete(child);
      groupLeaders.delete(pid);
      resolve(exitInfo);
    });
  });
  const logText = (): string => readFileSync(layout.logPath, 'utf8');

  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<ExitInfo> => {
    if (exitInfo !== null) return exitInfo;
    process.kill(pid, signal);
    const timedOut = Symbol('timeout');
    let timer: NodeJS.Timeout | undefined;
    const first = await Promise.race([exited, new Promise<typeof timedOut>((r) => (timer = setTimeout(() => r(timedOut), STOP_TIMEOUT_MS)))]);
    clearTimeout(timer);
    if (first !== timedOut) return first;
    if (exitInfo === null) process.kill(pid, 'SIGKILL');
    return exited;
  };

  const workerPids = (): number[] => {
    const pids = new Set<number>();
    for (const line of logText().slice(logStart).split('\n')) {
      if (!line.startsWith('{') || !line.includes('"msg":"listening"')) continue;
      const p = (JSON.parse(line) as { pid?: number }).pid;
      if (p !== undefined && p !== pid) pids.add(p);
    }
    return [...pids];
  };
  const killGroup = async (): Promise<ExitInfo> => {
    if (!isGroup) throw new Error('killGroup() needs processGroup: true');
    const workersBefore = workerPids();
    // The group may already be empty (the primary exited and took its workers with it).
    try {
      process.kill(-pid, 'SIGKILL');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
    const info = await exited;
    const deadline = Date.now() + GROUP_EXIT_TIMEOUT_MS;
    while (workersBefore.some(isLive)) {
      if (Date.now() > deadline) throw new Error(`workers ${workersBefore.filter(isLive).join(', ')} outlived the group kill`);
      await sleep(20);
    }
    return info;
  };

  const server: CliServer = {
    ...layout,
    pid,
    exited,
    stop,
    killGroup,
    workerPids,
    logText,
    restart: async () => {
      if (exitInfo === null) throw new Error('restart() needs the previous run stopped first');
      return launch(layout, workers, launcher, isGroup);
    },
    cleanup: async () => {
      if (isGroup && exitInfo === null) await killGroup();
      else await stop('SIGKILL');
      await rm(layout.dir, { recursive: true, force: true });
    },
  };

  // Ready: a TCP connect gets a 220 banner; with workers, also the primary's "ready" (every
  // worker listening), so that connections are not all served by the first worker up.
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastError = '';
  let hasBanner = false;
  while (Date.now() < deadline) {
    if (exitInfo !== null) break;
    if (!hasBanner) {
      try {
        const banner = await readBanner(layout.port, Math.max(100, deadline - Date.now()));
        if (!banner.startsWith('220 ')) throw new Error(`unexpected banner ${JSON.stringify(banner)}`);
        hasBanner = true;
      } catch (err) {
        lastError = (err as Error).message;
      }
    }
    if (hasBanner && (workers === 1 || READY_LINE.test(logText().slice(logStart)))) return server;
    await sleep(50);
  }
  const log = logText().slice(logStart);
  if (isGroup) await killGroup();
  else await stop('SIGKILL');
  const why = exitInfo !== null ? `exited (${JSON.stringify(exitInfo)})` : `not ready in ${READY_TIMEOUT_MS} ms (${lastError})`;
  const err = new Error(`portcullis serve ${why}; log:\n${log}`) as Error & { isAddressInUse?: boolean };
  err.isAddressInUse = /EADDRINUSE/.test(log);
  throw err;
}

/** Writes a config into a new temp dir and starts `portcullis serve` on it. */
export async function startCliServer(opts: CliServerOptions): Promise<CliServer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-cli-'));
  try {
    // The free port can be taken by someone else between our check and the child's bind: retry.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const spoolDir = opts.spoolDir ?? path.join(dir, 'spool');
      const configPath = path.join(dir, 'portcullis.toml');
      const logPath = path.join(dir, 'server.log');
      writeFileSync(configPath, configText(opts, port, spoolDir));
      try {
        return await launch({ dir, spoolDir, configPath, logPath, port }, opts.workers, opts.launcher ?? 'node', opts.processGroup === true);
      } catch (err) {
        if (attempt >= 3 || !(err as { isAddressInUse?: boolean }).isAddressInUse) throw err;
      }
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Runs `portcullis <args> --config FILE` to completion; stdout as bytes. */
export async function runCli(configPath: string, args: string[], timeoutMs = 20_000): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  const child = spawn(process.execPath, [CLI_MAIN, ...args, '--config', configPath], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  const out: Buffer[] = [];
  let stderr = '';
  child.stdout!.on('data', (b: Buffer) => out.push(b));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout: Buffer.concat(out), stderr };
}
