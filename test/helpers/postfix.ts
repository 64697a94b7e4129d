// A private Postfix instance for tests: its own config_directory, queue_directory and
// data_directory in a temp dir, one smtpd on a free 127.0.0.1 port (never port 25), its log in
// a file there (maillog_file), started with `postfix -c DIR start` and stopped with
// `postfix -c DIR stop`. Never reads or writes /etc/postfix or the system instance's queue, and
// never signals a process other than the master it started (by the PID in its own queue dir).
//
// What it can be: the internal mail server for `domains` (each recipient delivered by virtual(8)
// to a Maildir under DIR/mail/<domain>/<local>/, read back with received()); a server that knows
// only some `users` (others get 550 5.1.1 at RCPT); one that accepts some addresses and then fails
// them (`bounceUsers`: Postfix returns its own DSN to the sender); and, with `relay`, a remote MX
// whose other mail, its bounces included, goes to a given loopback host:port (our server).
//
// Postfix runs its daemons as the unprivileged `postfix` user: the temp dir is made traversable
// for it, and Postfix itself creates the queue's subdirectories (`postfix -c DIR check`, run by
// `start`, creates what is missing, as post-install does).

import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { freePort } from './ports.ts';

const run = promisify(execFile);

/** Where Debian installs the commands (a non-root PATH often lacks /usr/sbin). */
const SBIN = ['/usr/sbin', '/usr/local/sbin', '/sbin'];
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;
const POLL_MS = 50;

export type PostfixOptions = {
  /** Domains Postfix accepts mail for and delivers to Maildirs (default ["postfix.test"]). Read back with received(): Postfix stores with LF line ends. */
  domains?: string[];
  /** When set, only these addresses of `domains` exist; others are refused 550 5.1.1 at RCPT. */
  users?: string[];
  /** Addresses accepted at RCPT and failed at delivery: Postfix bounces them at once. Sets
   *  maximal_queue_lifetime = 0, so any other deferred mail of this instance bounces at once too. */
  bounceUsers?: string[];
  /** Where all other mail goes (bounces to other domains included): smtp to this loopback host:port. */
  relay?: { host: string; port: number };
  /** Postfix's own name (myhostname); default "postfix.test". */
  hostname?: string;
  /** main.cf lines added last (they win). */
  extraMainCf?: string[];
  /** Where its smtpd listens; default 127.0.0.1 on a free port. A remote MX of the tests is
   *  another loopback address on port 25 (`{ host: '127.0.0.2', port: 25 }`; needs root). */
  listen?: { host: string; port: number };
};

export type ReceivedMessage = {
  /** The Maildir file. */
  file: string;
  /** The envelope recipient (the Delivered-To field virtual(8) adds). */
  recipient: string;
  /** The envelope sender (the Return-Path field virtual(8) adds; '' for <>). */
  reversePath: string;
  bytes: Buffer;
};

export type PostfixInstance = {
  readonly host: string;
  readonly port: number;
  readonly dir: string;
  readonly hostname: string;
  /** Every message delivered to a Maildir so far. */
  received(): ReceivedMessage[];
  /** Waits (bounded) until `count` messages have been delivered; returns them. */
  waitForReceived(count: number, timeoutMs?: number): Promise<ReceivedMessage[]>;
  /** The instance's log so far (maillog_file). */
  log(): string;
  /** Waits (bounded) for a log line matching `pattern`; returns it. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** `postqueue -j` for this instance: what is still queued (deferred, active, held). */
  queue(): Promise<Array<Record<string, unknown>>>;
  /** `postqueue -f`: retry deferred mail now. */
  flush(): Promise<void>;
  /** `postfix reload`: the daemons re-read main.cf and their tables (a running smtpd finishes its
   *  session with the old ones first). */
  reload(): Promise<void>;
  stop(): Promise<void>;
};

function sbin(name: string): string {
  for (const dir of SBIN) {
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  return name;
}

/** Whether Postfix is installed (scripts/test-deps.sh installs it; tests skip with a reason if not). */
export function hasPostfix(): boolean {
  return existsSync(sbin('postfix')) && existsSync(sbin('postconf')) && process.getuid?.() === 0;
}

function postfixIds(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postfix:'));
  if (line === undefined) throw new Error('no "postfix" user: install Postfix (scripts/test-deps.sh)');
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

function masterCf(host: string, port: number): string {
  // service type private unpriv chroot wakeup maxproc command: nothing chrooted (the temp dir
  // holds no copy of the system files a chroot needs), one inet service on our port only.
  const rows = [
    `${host}:${port} inet n - n - - smtpd`,
    'pickup unix n - n 60 1 pickup',
    'cleanup unix n - n - 0 cleanup',
    'qmgr unix n - n 300 1 qmgr',
    'rewrite unix - - n - - trivial-rewrite',
    'bounce unix - - n - 0 bounce',
    'defer unix - - n - 0 bounce',
    'trace unix - - n - 0 bounce',
    'verify unix - - n - 1 verify',
    'flush unix n - n 1000? 0 flush',
    'proxymap unix - - n - - proxymap',
    'smtp unix - - n - - smtp',
    'relay unix - - n - - smtp',
    'showq unix n - n - - showq',
    'error unix - - n - - error',
    'retry unix - - n - - error',
    'discard unix - - n - - discard',
    'virtual unix - n n - - virtual',
    'anvil unix - - n - 1 anvil',
    'scache unix - - n - 1 scache',
    'postlog unix-dgram n - n - 1 postlogd',
  ];
  return `${rows.join('\n')}\n`;
}

/** Starts a private Postfix; the caller stops it (t.after(() => pf.stop())). */
export async function startPostfix(options: PostfixOptions = {}): Promise<PostfixInstance> {
  const domains = (options.domains ?? ['postfix.test']).map((d) => d.toLowerCase());
  const hostname = options.hostname ?? 'postfix.test';
  const host = options.listen?.host ?? '127.0.0.1';
  const port = options.listen?.port ?? (await freePort());
  const { uid, gid } = postfixIds();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-postfix-'));
  // The postfix user must reach the queue, data and mail directories below it.
  chmodSync(dir, 0o755);
  const conf = path.join(dir, 'etc');
  const queue = path.join(dir, 'queue');
  const data = path.join(dir, 'data');
  const mail = path.join(dir, 'mail');
  const maillog = path.join(dir, 'maillog');
  mkdirSync(conf);
  mkdirSync(queue);
  mkdirSync(data);
  mkdirSync(mail);
  chownSync(data, uid, gid);
  chownSync(mail, uid, gid);

  // Maildirs (a trailing slash is Maildir): one per listed user, else one per domain for all its
  // users (the "@domain" catch-all key). texthash: needs no postmap; regexp maps may not
  // substitute into mailbox paths (Postfix refuses, for safety).
  const mailboxMap = path.join(conf, 'mailboxes');
  const users = options.users?.map((u) => u.toLowerCase());
  const bounceUsers = (options.bounceUsers ?? []).map((u) => u.toLowerCase());
  const boxes = users === undefined ? domains.map((d) => `@${d} ${d}/all/`) : users.map((u) => `${u} ${u.split('@')[1]}/${u.split('@')[0]}/`);
  boxes.push(...bounceUsers.map((u) => `${u} ${u.split('@')[1]}/${u.split('@')[0]}/`));
  writeFileSync(mailboxMap, `${boxes.join('\n')}\n`);
  const transportMap = path.join(conf, 'transports');
  // Not `error:` or `retry:`: smtpd refuses an address routed there at RCPT already. An smtp
  // next hop on a loopback port nobody listens on fails at delivery (connection refused), and
  // with maximal_queue_lifetime = 0 the first failed attempt returns the message at once.
  const deadPort = await freePort();
  writeFileSync(transportMap, bounceUsers.map((u) => `${u} smtp:[127.0.0.1]:${deadPort}`).join('\n') + '\n');

  const main = [
    'compatibility_level = 3.6',
    `config_directory = ${conf}`,
    `queue_directory = ${queue}`,
    `data_directory = ${data}`,
    'mail_owner = postfix',
    'setgid_group = postdrop',
    `myhostname = ${hostname}`,
    'mydomain = test',
    'myorigin = $myhostname',
    'mydestination =',
    // Postfix accepts only interface addresses here, and 127.0.0.2 is not one (lo holds
    // 127.0.0.1/8); master.cf binds the listener itself, so `all` is as narrow in effect.
    `inet_interfaces = ${host === '127.0.0.1' ? '127.0.0.1' : 'all'}`,
    'inet_protocols = ipv4',
    'mynetworks = 127.0.0.0/8',
    'smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination',
    `maillog_file = ${maillog}`,
    // Postfix writes its log only below these prefixes (default /var and /dev/stdout).
    `maillog_file_prefixes = ${dir}`,
    'smtputf8_enable = yes',
    'biff = no',
    'alias_maps =',
    'alias_database =',
    'local_recipient_maps =',
    'append_dot_mydomain = no',
    'smtp_dns_support_level = disabled',
    'smtp_tls_security_level = none',
    'smtpd_tls_security_level = none',
    'smtp_host_lookup = native',
    `virtual_mailbox_domains = ${domains.join(', ')}`,
    `virtual_mailbox_base = ${mail}`,
    `virtual_mailbox_maps = texthash:${mailboxMap}`,
    `virtual_uid_maps = static:${uid}`,
    `virtual_gid_maps = static:${gid}`,
    `transport_maps = texthash:${transportMap}`,
    // Tests want answers now, not after Postfix's production back-off.
    'queue_run_delay = 1s',
    'minimal_backoff_time = 1s',
    'maximal_backoff_time = 2s',
    'delay_warning_time = 0',
    ...(bounceUsers.length > 0 ? ['maximal_queue_lifetime = 0', 'bounce_queue_lifetime = 0'] : []),
    ...(options.relay === undefined ? ['default_transport = error:5.4.4 no relay configured in this test'] : [`relayhost = [${options.relay.host}]:${options.relay.port}`, 'default_transport = smtp']),
    ...(options.extraMainCf ?? []),
  ];
  writeFileSync(path.join(conf, 'main.cf'), `${main.join('\n')}\n`);
  writeFileSync(path.join(conf, 'master.cf'), masterCf(host, port));

  const postfix = sbin('postfix');
  const env = { ...process.env, PATH: `${process.env.PATH ?? ''}:${SBIN.join(':')}` };
  const pidFile = path.join(queue, 'pid', 'master.pid');
  const readPid = (): number | null => {
    try {
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      return Number.isInteger(pid) && pid > 0 ? pid : null;
    } catch {
      return null;
    }
  };
  let masterPid: number | null = null;
  let isStopped = false;
  const isAlive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  // If the test process dies first, stop the instance it started (synchronously: exit handlers cannot wait).
  const onExit = (): void => {
    if (isStopped) return;
    try {
      execFileSync(postfix, ['-c', conf, 'stop'], { stdio: 'ignore', env, timeout: STOP_TIMEOUT_MS });
    } catch {
      if (masterPid !== null && isAlive(masterPid)) process.kill(masterPid, 'SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  try {
    // `postfix start` runs `postfix check` first, which creates the queue's subdirectories.
    await run(postfix, ['-c', conf, 'start'], { env, timeout: START_TIMEOUT_MS });
  } catch (err) {
    process.removeListener('exit', onExit);
    const log = existsSync(maillog) ? readFileSync(maillog, 'utf8') : '';
    const why = diagnose(postfix, conf, env);
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`postfix -c ${conf} start failed: ${(err as { stderr?: string }).stderr ?? (err as Error).message}\n${why}\n${log}`);
  }
  const deadline = Date.now() + START_TIMEOUT_MS;
  while ((masterPid = readPid()) === null || !(await listening(port, host))) {
    if (Date.now() > deadline) {
      onExit();
      process.removeListener('exit', onExit);
      throw new Error(`postfix did not listen on 127.0.0.1:${port} within ${START_TIMEOUT_MS} ms`);
    }
    await sleep(POLL_MS);
  }

  const received = (): ReceivedMessage[] => {
    const out: ReceivedMessage[] = [];
    if (!existsSync(mail)) return out;
    for (const domain of readdirSync(mail)) {
      for (const localPart of readdirSync(path.join(mail, domain))) {
        const newDir = path.join(mail, domain, localPart, 'new');
        if (!existsSync(newDir)) continue;
        for (const name of readdirSync(newDir).sort()) {
          const file = path.join(newDir, name);
          const bytes = readFileSync(file);
          const head = bytes.subarray(0, Math.max(0, bytes.indexOf('\n\n'))).toString('utf8');
          const recipient = /^Delivered-To: (.*)$/m.exec(head)?.[1] ?? `${localPart}@${domain}`;
          const reversePath = /^Return-Path: <(.*)>$/m.exec(head)?.[1] ?? '';
          out.push({ file, recipient, reversePath, bytes });
        }
      }
    }
    return out.sort((a, b) => statSync(a.file).mtimeMs - statSync(b.file).mtimeMs);
  };
  const log = (): string => (existsSync(maillog) ? readFileSync(maillog, 'utf8') : '');

  return {
    host,
    port,
    dir,
    hostname,
    received,
    async waitForReceived(count, timeoutMs = 10_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const got = received();
        if (got.length >= count) return got;
        if (Date.now() > end) throw new Error(`postfix delivered ${got.length} of ${count} messages within ${timeoutMs} ms; its log:\n${log()}`);
        await sleep(POLL_MS);
      }
    },
    log,
    async waitForLog(pattern, timeoutMs = 10_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const line = log().split('\n').find((l) => pattern.test(l));
        if (line !== undefined) return line;
        if (Date.now() > end) throw new Error(`no postfix log line matched ${pattern} within ${timeoutMs} ms; its log:\n${log()}`);
        await sleep(POLL_MS);
      }
    },
    async queue() {
      const { stdout } = await run(sbin('postqueue'), ['-c', conf, '-j'], { env, timeout: 10_000 });
      return stdout.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    async flush() {
      await run(sbin('postqueue'), ['-c', conf, '-f'], { env, timeout: 10_000 });
    },
    async reload() {
      await run(postfix, ['-c', conf, 'reload'], { env, timeout: 10_000 });
    },
    async stop() {
      if (isStopped) return;
      isStopped = true;
      process.removeListener('exit', onExit);
      try {
        await run(postfix, ['-c', conf, 'stop'], { env, timeout: STOP_TIMEOUT_MS });
      } catch {
        // Fall through: the master is signalled by its PID below if it is still there.
      }
      const end = Date.now() + STOP_TIMEOUT_MS;
      while (masterPid !== null && isAlive(masterPid)) {
        if (Date.now() > end) {
          process.kill(masterPid, 'SIGKILL');
          break;
        }
        await sleep(POLL_MS);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Why `postfix check` fails: Postfix writes its fatal errors to stderr only when stderr is a
 * terminal (else to the log, which is not running yet), so run it once under script(1).
 */
function diagnose(postfix: string, conf: string, env: NodeJS.ProcessEnv): string {
  try {
    return execFileSync('script', ['-qc', `${postfix} -c ${conf} check`, '/dev/null'], { env, timeout: 10_000, encoding: 'utf8' });
  } catch (err) {
    return String((err as { stdout?: string }).stdout ?? (err as Error).message);
  }
}

/** Whether something accepts TCP connections on host:port (one bounded try). */
async function listening(port: number, host = '127.0.0.1'): Promise<boolean> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}
