// Starts a real DNS server (dnsmasq) on a free loopback port for the policy tests: records come
// from dnsmasq option lines (`txt-record=...`, `host-record=...`, `address=/name/ip`), and each
// zone in `zones` is authoritative (unknown names there answer NXDOMAIN, the "not listed" answer
// a DNS list lookup needs). Ready once it answers a query. Changing records = restart (cheap).
// Owns only the process it spawned: stops it by that PID and removes its temporary dir.
// Never skips: a missing dnsmasq fails the test (scripts/test-deps.sh installs it).

import { spawn, type ChildProcess } from 'node:child_process';
import { Resolver } from 'node:dns/promises';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ownProcess } from './owned-process.ts';
import { freePort } from './ports.ts';

export type DnsServerOptions = {
  /** Zones answered authoritatively, e.g. ["example.test", "zen.test"]. */
  zones: readonly string[];
  /** dnsmasq option lines, e.g. 'txt-record=example.test,"v=spf1 -all"'. */
  records: readonly string[];
  /** TTL of every answer, in seconds (dnsmasq local-ttl). Default 60. */
  ttl?: number;
};

export type DnsTestServer = {
  /** For dns.servers: "127.0.0.1:PORT". */
  server: string;
  port: number;
  /** Queries answered so far, from dnsmasq's query log. */
  queryCount(): number;
  stop(): Promise<void>;
};

const READY_TIMEOUT_MS = 5000;
/** Debian installs it in /usr/sbin, which a non-root PATH often lacks. */
const DNSMASQ = existsSync('/usr/sbin/dnsmasq') ? '/usr/sbin/dnsmasq' : 'dnsmasq';

export async function startDnsServer(opts: DnsServerOptions): Promise<DnsTestServer> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(opts);
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError;
}

async function startOnce(opts: DnsServerOptions): Promise<DnsTestServer> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-dns-'));
  const logFile = path.join(dir, 'dns.log');
  const conf = [
    `port=${port}`, 'listen-address=127.0.0.1', 'bind-interfaces', 'no-resolv', 'no-hosts', 'no-poll',
    'no-negcache', 'user=', `pid-file=`, 'log-queries', `log-facility=${logFile}`, `local-ttl=${opts.ttl ?? 60}`,
    ...opts.zones.map((z) => `local=/${z}/`),
    ...opts.records,
  ];
  writeFileSync(path.join(dir, 'dnsmasq.conf'), conf.join('\n') + '\n');
  const child: ChildProcess = spawn(DNSMASQ, ['--keep-in-foreground', `--conf-file=${path.join(dir, 'dnsmasq.conf')}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => { stderr += b.toString('utf8').slice(0, 4000); });
  const owned = ownProcess(child);
  const stop = async () => {
    await owned.stop();
    rmSync(dir, { recursive: true, force: true });
  };

  const probe = new Resolver({ timeout: 200, tries: 1 });
  probe.setServers([`127.0.0.1:${port}`]);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    try {
      await probe.resolve4(`portcullis-probe.${opts.zones[0] ?? 'test'}`);
      break;
    } catch (err) {
      // NXDOMAIN from a local zone is an answer: the server is up.
      if ((err as NodeJS.ErrnoException).code === 'ENOTFOUND' || (err as NodeJS.ErrnoException).code === 'ENODATA') break;
    }
    if (owned.isExited() || Date.now() > deadline) {
      await stop();
      const why = owned.spawnError() !== null ? String(owned.spawnError()) : owned.isExited() ? 'it exited' : 'no answer in time';
      throw new Error(`dnsmasq did not start on port ${port}: ${why}\n${stderr}`);
    }
    await sleep(50);
  }
  const readyQueries = countQueries(logFile);
  return {
    server: `127.0.0.1:${port}`,
    port,
    queryCount: () => countQueries(logFile) - readyQueries,
    stop,
  };
}

function countQueries(logFile: string): number {
  try {
    return readFileSync(logFile, 'utf8').split('\n').filter((l) => /: query\[/.test(l)).length;
  } catch {
    return 0;
  }
}
