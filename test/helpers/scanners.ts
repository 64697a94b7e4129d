// Real content scanners for the scanner checks' tests, each on a free loopback port (or a UNIX
// socket) with its own mkdtemp dir: clamd with a one-line EICAR signature database (no
// freshclam, ready in well under a second), and the test strings every scanner knows (EICAR,
// GTUBE). Recipes: ../shared/ECOSYSTEM.md sections 4-6. Owns only the processes it spawned:
// stops them by their PIDs, never by name. Never skips: a missing program fails the test
// (scripts/test-deps.sh installs the packages).

import { spawn } from 'node:child_process';
import { chmodSync, closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { withRetries } from './mail-peers.ts';
import { ownProcess, type OwnedProcess } from './owned-process.ts';
import { freePort } from './ports.ts';

/** The EICAR anti-virus test file (68 octets): every scanner reports it, it harms nothing. */
export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
/** SpamAssassin's and rspamd's spam test string. */
export const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';
/** The name clamd reports for EICAR with startClamd's database (clamd appends ".UNOFFICIAL"). */
export const EICAR_SIGNATURE = 'Portcullis.Test.EICAR.NDB.UNOFFICIAL';

const SBIN_PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;

export type Scanner = { readonly port: number; readonly socketPath: string | null; readonly dir: string; log(): string; stop(): Promise<void> };

function run(program: string, args: string[], dir: string, logName: string): OwnedProcess {
  const out = openSync(path.join(dir, logName), 'a');
  try {
    return ownProcess(spawn(program, args, { stdio: ['ignore', out, out], env: { ...process.env, PATH: SBIN_PATH } }));
  } finally {
    closeSync(out);
  }
}

/** Whether clamd answers zPING with PONG at `where` (a port or a UNIX socket path). */
function pings(where: number | string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = typeof where === 'string' ? net.connect({ path: where }) : net.connect({ host: '127.0.0.1', port: where });
    let got = '';
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(2000, () => done(false));
    s.once('connect', () => s.write('zPING\0'));
    s.on('data', (b: Buffer) => {
      got += b.toString('latin1');
      if (got.includes('\0')) done(got.startsWith('PONG'));
    });
    s.once('error', () => done(false));
    s.once('close', () => done(false));
  });
}

/** clamd knowing only EICAR (one body signature); on a loopback port, or with `unix` on a socket in its dir. */
export function startClamd(opts: { unix?: boolean; streamMaxLength?: string } = {}): Promise<Scanner> {
  return withRetries(async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-clamd-'));
    const db = path.join(dir, 'db');
    mkdirSync(db);
    writeFileSync(path.join(db, 'test.ndb'), `Portcullis.Test.EICAR.NDB:0:*:${Buffer.from('EICAR-STANDARD-ANTIVIRUS-TEST-FILE').toString('hex')}\n`);
    const port = opts.unix === true ? 0 : await freePort();
    const socketPath = opts.unix === true ? path.join(dir, 'clamd.sock') : null;
    const conf = path.join(dir, 'clamd.conf');
    writeFileSync(
      conf,
      [
        'Foreground yes',
        `DatabaseDirectory ${db}`,
        ...(socketPath === null ? [`TCPSocket ${port}`, 'TCPAddr 127.0.0.1'] : [`LocalSocket ${socketPath}`]),
        `LogFile ${path.join(dir, 'clamd.log')}`,
        `PidFile ${path.join(dir, 'clamd.pid')}`,
        `TemporaryDirectory ${dir}`,
        `StreamMaxLength ${opts.streamMaxLength ?? '25M'}`,
        'MaxThreads 4',
        'Bytecode no',
        '',
      ].join('\n'),
    );
    const owned = run('clamd', ['-c', conf], dir, 'stdout.log');
    const log = (): string => {
      let out = '';
      for (const f of ['stdout.log', 'clamd.log']) {
        try {
          out += `--- ${f}\n${readFileSync(path.join(dir, f), 'utf8')}`;
        } catch {
          // not written yet
        }
      }
      return out;
    };
    const stop = async (): Promise<void> => {
      await owned.stop();
      rmSync(dir, { recursive: true, force: true });
    };
    const deadline = Date.now() + 60_000;
    while (!(await pings(socketPath ?? port))) {
      if (owned.isExited() || Date.now() > deadline) {
        const text = log();
        await stop();
        throw new Error(`clamd did not answer PING: ${owned.isExited() ? `exited ${String(owned.spawnError() ?? '')}` : 'timed out'}\n${text.slice(-3000)}`);
      }
      await sleep(50);
    }
    return { port, socketPath, dir, log, stop };
  });
}

/** spamd with the shipped rules and no network tests (ready in about a second); `port` is where it listens. */
export function startSpamd(): Promise<Scanner> {
  return withRetries(async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-spamd-'));
    chmodSync(dir, 0o755);
    const port = await freePort();
    // Without the .pre files every scan fails ("no loaded plugin implements 'check_main'").
    for (const f of readdirSync('/etc/spamassassin')) if (f.endsWith('.pre')) copyFileSync(path.join('/etc/spamassassin', f), path.join(dir, f));
    writeFileSync(path.join(dir, 'local.cf'), 'use_bayes 0\nbayes_auto_learn 0\nskip_rbl_checks 1\ndns_available no\n');
    const owned = run(
      'spamd',
      [`--listen=127.0.0.1:${port}`, '--allowed-ips=127.0.0.1', `--pidfile=${path.join(dir, 'spamd.pid')}`, `--siteconfigpath=${dir}`, '--nouser-config', '--username=nobody', '--syslog=stderr', '--min-children=1', '--max-children=2'],
      dir,
      'spamd.log',
    );
    const log = (): string => readFileSync(path.join(dir, 'spamd.log'), 'utf8');
    const stop = async (): Promise<void> => {
      await owned.stop();
      rmSync(dir, { recursive: true, force: true });
    };
    const deadline = Date.now() + 120_000;
    while (!log().includes('server successfully spawned child')) {
      if (owned.isExited() || Date.now() > deadline) {
        const text = log();
        await stop();
        throw new Error(`spamd did not start\n${text.slice(-3000)}`);
      }
      await sleep(100);
    }
    return { port, socketPath: null, dir, log, stop };
  });
}

/** Whether a loopback port accepts a connection. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export type Rspamd = Scanner & { /** The normal worker: HTTP /checkv2. */ readonly httpPort: number };

/**
 * rspamd (heavy: ~8 s to listen, four processes): its normal worker on `httpPort` (HTTP), its
 * proxy worker in milter mode on `port`, scanning itself (self_scan); DNS pointed at a port
 * nothing answers, so no query leaves the machine.
 */
export function startRspamd(): Promise<Rspamd> {
  return withRetries(async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-rspamd-'));
    chmodSync(dir, 0o755);
    const [normal, controller, port, dnsPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const o = path.join(dir, 'override.d');
    mkdirSync(o);
    writeFileSync(path.join(o, 'worker-normal.inc'), `bind_socket = "127.0.0.1:${normal}";\ncount = 1;\n`);
    writeFileSync(path.join(o, 'worker-controller.inc'), `bind_socket = "127.0.0.1:${controller}";\ncount = 1;\n`);
    writeFileSync(path.join(o, 'worker-proxy.inc'), `bind_socket = "127.0.0.1:${port}";\nmilter = yes;\ntimeout = 120s;\nupstream "local" { default = yes; self_scan = yes; }\ncount = 1;\n`);
    writeFileSync(path.join(o, 'worker-fuzzy.inc'), 'count = -1;\n');
    writeFileSync(path.join(o, 'logging.inc'), 'type = "console";\nlevel = "notice";\n');
    writeFileSync(path.join(o, 'options.inc'), `dns { nameserver = ["127.0.0.1:${dnsPort}"]; timeout = 1s; retransmits = 1; }\n`);
    const owned = run(
      'rspamd',
      ['-f', '-i', '-u', 'root', '-g', 'root', '-c', '/etc/rspamd/rspamd.conf', '--var', `LOCAL_CONFDIR=${dir}`, '--var', `RUNDIR=${dir}`, '--var', `DBDIR=${dir}`, '--var', `LOGDIR=${dir}`],
      dir,
      'rspamd.log',
    );
    const log = (): string => readFileSync(path.join(dir, 'rspamd.log'), 'utf8');
    const stop = async (): Promise<void> => {
      await owned.stop();
      rmSync(dir, { recursive: true, force: true });
    };
    const deadline = Date.now() + 240_000;
    for (const p of [port, normal]) {
      while (!(await accepts(p))) {
        if (owned.isExited() || Date.now() > deadline) {
          const text = log();
          await stop();
          throw new Error(`rspamd did not listen on ${p}: ${owned.isExited() ? `exited ${String(owned.spawnError() ?? '')}` : 'timed out'}\n${text.slice(-3000)}`);
        }
        await sleep(50);
      }
    }
    return { port, httpPort: normal, socketPath: null, dir, log, stop };
  });
}

/** A TCP listener that accepts and never answers (a hung scanner); its connections are held until close. */
export async function startHungListener(): Promise<{ port: number; accepted: () => number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer((s) => {
    accepted++;
    sockets.add(s);
    s.on('error', () => {});
    s.resume();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted: () => accepted,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A TCP listener that answers every connection with `bytes` once it has read something, then closes. */
export async function startGarbageListener(bytes: Buffer): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.once('data', () => s.end(bytes));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
