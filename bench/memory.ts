// The memory scenario: peak memory of the whole server (every process of its tree) while many
// clients each send one large message at the same time, Portcullis against Postfix in the same
// run. Measured from outside, from /proc, every 100 ms: the sum of RSS (what `ps` shows) and of
// PSS (shared pages split between the processes that share them).
//
//   npm run -s bench:memory -- [--clients 200] [--megabytes 20] [--only portcullis]

import { mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { runLoad, type Cell } from './load.ts';
import { pssKiB, rssKiB, sampleTree } from './proc.ts';
import { DISPLAY_NAMES, startServer, type ServerName } from './servers.ts';
import { findExecutable } from './util.ts';

const SAMPLE_MS = 100;

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '200' },
    megabytes: { type: 'string', default: '20' },
    only: { type: 'string' },
  },
});
const clients = Number(values.clients);
const messageBytes = Math.round(Number(values.megabytes) * 1_000_000);
const servers = (values.only ?? 'portcullis,postfix').split(',') as ServerName[];
const log = (line: string): void => void process.stdout.write(`${line}\n`);

const smtpSource = findExecutable('smtp-source');
if (smtpSource === undefined) throw new Error('smtp-source not found (postfix package)');
const repoDir = join(import.meta.dirname, '..');
const mib = (kib: number): string => `${(kib / 1024).toFixed(0)} MiB`;

const results: { name: string; idleRss: number; peakRss: number; peakPss: number; seconds: number }[] = [];
for (const name of servers) {
  const scratchDir = mkdtempSync(join(tmpdir(), 'portcullis-bench-memory-'));
  chmodSync(scratchDir, 0o755);
  const server = await startServer(name, { scratchDir, repoDir, debug: false, log, postfixMainCf: [`message_size_limit = ${messageBytes * 2}`] });
  try {
    await sleep(1000);
    const idle = sampleTree(server.rootPid).pids;
    const idleRss = rssKiB(idle);
    let peakRss = idleRss;
    let peakPss = pssKiB(idle);
    const sampler = setInterval(() => {
      const pids = sampleTree(server.rootPid).pids;
      peakRss = Math.max(peakRss, rssKiB(pids));
      peakPss = Math.max(peakPss, pssKiB(pids));
    }, SAMPLE_MS);
    const cell: Cell = { sessions: clients, messageBytes, reuseConnection: false, batch: clients, batches: 1 };
    const port = { portcullis: 2621, postfix: 2601, haraka: 2611 }[name];
    const result = await runLoad(smtpSource, port, cell, server.rootPid, 600_000);
    clearInterval(sampler);
    if (!result.ok) throw new Error(`${name}: ${result.error}`);
    results.push({ name: DISPLAY_NAMES[name], idleRss, peakRss, peakPss, seconds: result.seconds });
    log(`${DISPLAY_NAMES[name]}: ${clients} clients x ${values.megabytes} MB: idle RSS ${mib(idleRss)}, peak RSS ${mib(peakRss)}, peak PSS ${mib(peakPss)}, ${result.seconds.toFixed(1)} s`);
  } finally {
    await server.stop();
    rmSync(scratchDir, { recursive: true, force: true });
  }
}
log('');
log(`| server | idle RSS | peak RSS | peak PSS | seconds |`);
log(`| --- | --- | --- | --- | --- |`);
for (const r of results) log(`| ${r.name} | ${mib(r.idleRss)} | ${mib(r.peakRss)} | ${mib(r.peakPss)} | ${r.seconds.toFixed(1)} |`);
