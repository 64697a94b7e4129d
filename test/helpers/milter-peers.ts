// Starts real milters for the milter client's tests, each on a free loopback port with its own
// mkdtemp dir (config, key, pid, log): opendkim signing for example.test, spamass-milter in
// front of spamd (started by scanners.ts); rspamd (whose proxy speaks milter) is in scanners.ts.
// Recipes: ../shared/ECOSYSTEM.md sections 5 and 6. Owns only the processes it spawned: stops
// them by their PIDs, never by name, and removes their dirs. Never skips: a missing program fails
// the test (scripts/test-deps.sh installs the packages).

import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ownProcess, type OwnedProcess } from './owned-process.ts';
import { freePort } from './ports.ts';
import { withRetries } from './mail-peers.ts';
import { startSpamd } from './scanners.ts';

export type MilterPeer = { readonly port: number; readonly dir: string; log(): string; stop(): Promise<void> };

const SBIN_PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;

function run(program: string, args: string[], dir: string, logName: string): OwnedProcess {
  const out = openSync(path.join(dir, logName), 'a');
  try {
    return ownProcess(spawn(program, args, { stdio: ['ignore', out, out], env: { ...process.env, PATH: SBIN_PATH } }));
  } finally {
    closeSync(out);
  }
}

/** Whether a loopback port, or a UNIX socket path, accepts a connection. */
function accepts(where: number | string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = typeof where === 'string' ? net.connect({ path: where }) : net.connect({ host: '127.0.0.1', port: where });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function waitPort(port: number | string, owned: readonly OwnedProcess[], timeoutMs: number, what: string, log: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await accepts(port))) {
    const dead = owned.find((o) => o.isExited());
    if (dead !== undefined || Date.now() > deadline) {
      throw new Error(`${what} did not listen on ${port}: ${dead !== undefined ? `exited ${String(dead.spawnError() ?? '')}` : 'timed out'}\n${log().slice(-3000)}`);
    }
    await sleep(50);
  }
}

function readLogs(dir: string): string {
  let out = '';
  for (const f of readdirSync(dir)) if (f.endsWith('.log')) out += `--- ${f}\n${readFileSync(path.join(dir, f), 'utf8')}`;
  return out;
}


export type Opendkim = MilterPeer & { readonly selector: string; readonly domain: string; readonly publicKeyTxt: string; readonly socketPath: string | null };

/** opendkim signing mail from 127.0.0.1 for d=example.test, s=sel1 (relaxed/relaxed unless
 *  told); on a loopback port, or with `unix` on a UNIX socket in its dir (then `port` is 0). */
export function startOpendkim(opts: { unix?: boolean; canonicalization?: 'relaxed/relaxed' | 'simple/simple' } = {}): Promise<Opendkim> {
  return withRetries(async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-opendkim-'));
    const port = opts.unix === true ? 0 : await freePort();
    const socketPath = opts.unix === true ? path.join(dir, 'opendkim.sock') : null;
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(dir, 'sel1.key');
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs1', format: 'pem' }));
    chmodSync(keyFile, 0o600);
    const der = publicKey.export({ type: 'spki', format: 'der' });
    const conf = path.join(dir, 'opendkim.conf');
    writeFileSync(
      conf,
      [
        'Syslog no',
        'LogWhy yes',
        socketPath === null ? `Socket inet:${port}@127.0.0.1` : `Socket local:${socketPath}`,
        `PidFile ${path.join(dir, 'opendkim.pid')}`,
        'Domain example.test',
        'Selector sel1',
        `KeyFile ${keyFile}`,
        'Mode s',
        `Canonicalization ${opts.canonicalization ?? 'relaxed/relaxed'}`,
        'InternalHosts 127.0.0.1',
        'Nameservers 127.0.0.1',
        // It refuses to start under a world-writable /tmp otherwise (ECOSYSTEM.md section 5).
        'RequireSafeKeys false',
        '',
      ].join('\n'),
    );
    const owned = run('opendkim', ['-f', '-x', conf], dir, 'opendkim.log');
    const log = (): string => readLogs(dir);
    const stop = async (): Promise<void> => {
      await owned.stop();
      rmSync(dir, { recursive: true, force: true });
    };
    try {
      await waitPort(socketPath ?? port, [owned], 10_000, 'opendkim', log);
    } catch (err) {
      await stop();
      throw err;
    }
    return { port, dir, log, stop, socketPath, selector: 'sel1', domain: 'example.test', publicKeyTxt: `v=DKIM1; k=rsa; p=${der.toString('base64')}` };
  });
}

/** spamd (scanners.ts: shipped rules, no network tests) and spamass-milter in front of it. `milterArgs`: e.g. ["-r", "15"] to reject. */
export function startSpamassMilter(milterArgs: string[] = []): Promise<MilterPeer> {
  return withRetries(async () => {
    const spamd = await startSpamd();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-spamass-'));
    const log = (): string => `--- spamd.log\n${spamd.log()}${readLogs(dir)}`;
    let milter: OwnedProcess | null = null;
    const stop = async (): Promise<void> => {
      await milter?.stop();
      await spamd.stop();
      rmSync(dir, { recursive: true, force: true });
    };
    try {
      const port = await freePort();
      milter = run('spamass-milter', ['-p', `inet:${port}@127.0.0.1`, '-P', path.join(dir, 'sm.pid'), ...milterArgs, '--', '-d', '127.0.0.1', '-p', String(spamd.port)], dir, 'spamass-milter.log');
      await waitPort(port, [milter], 10_000, 'spamass-milter', log);
      return { port, dir, log, stop };
    } catch (err) {
      await stop();
      throw err;
    }
  });
}

export { startRspamd } from './scanners.ts';
