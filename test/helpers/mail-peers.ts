// Real next hops for the delivery-client tests, each on a free loopback port in its own mkdtemp
// dir: Postfix's smtp-sink (messages dumped one file each) and Dovecot LMTP delivering to a
// Maildir. Owns only the processes it spawned (stopped by their PID) and the dirs it made.
// Never skips: a missing tool fails the test (scripts/test-deps.sh installs postfix, dovecot).

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ownProcess, type OwnedProcess } from './owned-process.ts';
import { freePort } from './ports.ts';

const READY_TIMEOUT_MS = 8000;
/** The uid/gid the daemons drop to when we are root (nobody on Debian). */
const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

function sbin(tool: string): string {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = path.join(dir, tool);
    if (dir !== '' && existsSync(p)) return p;
  }
  return tool;
}

function readTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').slice(-3000);
  } catch {
    return '';
  }
}

/** Polls until the port greets with 220 (the protocol's own readiness), bounded. */
async function waitGreeting(port: number, owned: OwnedProcess, log: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (await greets(port)) return;
    if (owned.isExited() || Date.now() > deadline) throw new Error(`peer on ${port} did not start: ${owned.spawnError() ?? 'no greeting'}\n${readTail(log)}`);
    await sleep(50);
  }
}

function greets(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const t = setTimeout(() => done(false), 500);
    const done = (ok: boolean): void => {
      clearTimeout(t);
      s.destroy();
      resolve(ok);
    };
    s.once('data', (d) => done(d.toString().startsWith('220')));
    s.once('error', () => done(false));
  });
}

/** Retries a start whose free port another process took first. */
export async function withRetries<T>(start: () => Promise<T>): Promise<T> {
  let last: unknown;
  for (let i = 0; i < 3; i++) {
    try {
      return await start();
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

export type SmtpSink = {
  port: number;
  /** Every dumped message so far: smtp-sink's X-* and Received lines, then the content (LF). */
  dumps(): string[];
  /** The dump files so far, as paths (a directory listing: cheap enough to poll). */
  dumpFiles(): string[];
  stop(): Promise<void>;
};

/** smtp-sink with `flags` (e.g. ['-P'] for no PIPELINING, ['-q', 'RCPT'] to refuse RCPT). */
export function startSmtpSink(flags: string[] = []): Promise<SmtpSink> {
  return withRetries(async () => {
    const port = await freePort();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-sink-'));
    chmodSync(dir, 0o755);
    const dumpDir = path.join(dir, 'dump');
    mkdirSync(dumpDir);
    if (isRoot) chownSync(dumpDir, NOBODY, NOBODY);
    const log = path.join(dir, 'sink.log');
    const fd = openSync(log, 'a');
    let child: ChildProcess;
    try {
      child = spawn(sbin('smtp-sink'), [...(isRoot ? ['-u', 'nobody'] : []), '-d', path.join(dumpDir, '%M%S.'), ...flags, `127.0.0.1:${port}`, '100'], { stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const owned = ownProcess(child);
    const stop = async (): Promise<void> => {
      await owned.stop();
      rmSync(dir, { recursive: true, force: true });
    };
    try {
      await waitGreeting(port, owned, log);
    } catch (err) {
      await stop();
      throw err;
    }
    return {
      port,
      dumps: () => readdirSync(dumpDir).sort().map((f) => readFileSync(path.join(dumpDir, f), 'latin1')),
      dumpFiles: () => readdirSync(dumpDir).sort().map((f) => path.join(dumpDir, f)),
      stop,
    };
  });
}

/** The content part of an smtp-sink dump (after its own header block, which ends at the
 *  Received field it adds). */
export function sinkContent(dump: string): string {
  const m = /^Received: [^\n]*\n(?:[ \t][^\n]*\n)*/m.exec(dump);
  return m === null ? dump : dump.slice(m.index + m[0].length);
}

export type DovecotLmtp = {
  port: number;
  /** The socket path of a second, UNIX-socket listener. */
  socket: string;
  /** Files in a user's Maildir/new. */
  delivered(user: string): string[];
  /** The files in a user's Maildir/new, as paths (a directory listing: cheap enough to poll). */
  deliveredFiles(user: string): string[];
  /** The files in a user's Maildir/tmp: deliveries Dovecot is writing now. */
  writingFiles(user: string): string[];
  stop(): Promise<void>;
};

/** Dovecot LMTP to Maildir for the given users (ECOSYSTEM.md section 3). */
export function startDovecotLmtp(users: string[]): Promise<DovecotLmtp> {
  return withRetries(async () => {
    const port = await freePort();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-dovecot-'));
    chmodSync(dir, 0o755);
    for (const d of ['run', 'state', 'mail']) mkdirSync(path.join(dir, d));
    const uid = isRoot ? NOBODY : process.getuid!();
    const gid = isRoot ? NOBODY : process.getgid!();
    if (isRoot) chownSync(path.join(dir, 'mail'), uid, gid);
    writeFileSync(path.join(dir, 'users'), users.map((u) => `${u}:{PLAIN}secret:${uid}:${gid}::${dir}/mail/${u}::\n`).join(''));
    const socket = path.join(dir, 'lmtp.sock');
    writeFileSync(
      path.join(dir, 'dovecot.conf'),
      [
        'auth_username_format = %Ln',
        'protocols = lmtp',
        'listen = 127.0.0.1',
        `base_dir = ${dir}/run`,
        `state_dir = ${dir}/state`,
        `log_path = ${dir}/dovecot.log`,
        'ssl = no',
        'mail_location = maildir:~/Maildir',
        'first_valid_uid = 1',
        ...(isRoot ? [] : [`default_internal_user = ${os.userInfo().username}`, `default_login_user = ${os.userInfo().username}`]),
        'passdb {', '  driver = passwd-file', `  args = scheme=PLAIN ${dir}/users`, '}',
        'userdb {', '  driver = passwd-file', `  args = ${dir}/users`, '}',
        'service lmtp {',
        '  inet_listener lmtp {', '    address = 127.0.0.1', `    port = ${port}`, '  }',
        `  unix_listener ${socket} {`, '    mode = 0666', '  }',
        '}',
        '',
      ].join('\n'),
    );
    const log = path.join(dir, 'stdout.log');
    const fd = openSync(log, 'a');
    let child: ChildProcess;
    try {
      child = spawn(sbin('dovecot'), ['-F', '-c', path.join(dir, 'dovecot.conf')], { stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const owned = ownProcess(child);
    const stop = async (): Promise<void> => {
      await owned.stop();
      rmSync(dir, { recursive: true, force: true });
    };
    try {
      await waitGreeting(port, owned, log + '\n' + path.join(dir, 'dovecot.log'));
    } catch (err) {
      const detail = readTail(path.join(dir, 'dovecot.log'));
      await stop();
      throw new Error(`${(err as Error).message}\n${detail}`);
    }
    return {
      port,
      socket,
      delivered: (user) => {
        const d = path.join(dir, 'mail', user, 'Maildir', 'new');
        return existsSync(d) ? readdirSync(d).sort().map((f) => readFileSync(path.join(d, f), 'latin1')) : [];
      },
      deliveredFiles: (user) => {
        const d = path.join(dir, 'mail', user, 'Maildir', 'new');
        return existsSync(d) ? readdirSync(d).sort().map((f) => path.join(d, f)) : [];
      },
      writingFiles: (user) => {
        const d = path.join(dir, 'mail', user, 'Maildir', 'tmp');
        return existsSync(d) ? readdirSync(d).sort().map((f) => path.join(d, f)) : [];
      },
      stop,
    };
  });
}
