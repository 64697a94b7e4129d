// The memory scenario: peak memory of the whole server (every process of its tree) while many
// clients each send one large message at the same time, Portcullis against Postfix in the same
// run. Measured from outside, from /proc, every 100 ms: the sum of RSS (what `ps` shows) and of
// PSS (shared pages split between the processes that share them).
//
//   npm run -s bench:memory -- [--clients 200] [--megabytes 20] [--only portcullis] [--client node|smtp-source] [--no-size]
//                              [--node-args="--trace-gc ..."] [--debug]
//
// The default client is a small one of our own that keeps every session uploading at the same
// time (one shared body buffer, written with backpressure): smtp-source writes each session's
// message in one blocking burst, so with large messages only a few sessions are mid-upload at
// any moment and the peak understates what many slow concurrent uploads cost. Like the MTAs that
// send most mail (Postfix, Exim), it declares the message size in MAIL FROM (RFC 1870 SIZE);
// --no-size leaves it out.

import { mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { runLoad, type Cell } from './load.ts';
import { pssKiB, rssKiB, sampleTree } from './proc.ts';
import { DISPLAY_NAMES, PORTS, startServer, type ServerName } from './servers.ts';
import { findExecutable, HOST } from './util.ts';
import net from 'node:net';
import { performance } from 'node:perf_hooks';

const SAMPLE_MS = 100;

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '200' },
    client: { type: 'string', default: 'node' },
    'no-size': { type: 'boolean', default: false },
    megabytes: { type: 'string', default: '20' },
    only: { type: 'string' },
    // Node options for Portcullis (an experiment's V8 flags, --trace-gc); split on spaces.
    'node-args': { type: 'string' },
    // Keep the scratch directory (configs, the servers' logs) and say where it is.
    debug: { type: 'boolean', default: false },
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
  const portcullisNodeArgs = values['node-args']?.split(' ').filter((a) => a !== '') ?? [];
  if (name === 'portcullis') {
    // One start and stop first, so that the measured one starts as an operator's does after the
    // first: with the compile cache warm (bin/portcullis.js), not paying the first run's cost.
    const warmDir = mkdtempSync(join(tmpdir(), 'portcullis-bench-memory-warm-'));
    chmodSync(warmDir, 0o755);
    const warm = await startServer(name, { scratchDir: warmDir, repoDir, debug: false, log, portcullisNodeArgs });
    await warm.stop();
    rmSync(warmDir, { recursive: true, force: true });
  }
  const server = await startServer(name, { scratchDir, repoDir, debug: values.debug, log, postfixMainCf: [`message_size_limit = ${messageBytes * 2}`], portcullisNodeArgs });
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
    const port = PORTS[name];
    const result = values.client === 'smtp-source' ? await runLoad(smtpSource, port, cell, server.rootPid, 600_000) : await concurrentUploads(port, clients, messageBytes, 600_000, !values['no-size']);
    clearInterval(sampler);
    if (!result.ok) throw new Error(`${name}: ${result.error}`);
    results.push({ name: DISPLAY_NAMES[name], idleRss, peakRss, peakPss, seconds: result.seconds });
    log(`${DISPLAY_NAMES[name]}: ${clients} clients x ${values.megabytes} MB (${values.client}${values['no-size'] ? ', no SIZE' : ''}): idle RSS ${mib(idleRss)}, peak RSS ${mib(peakRss)}, peak PSS ${mib(peakPss)}, ${result.seconds.toFixed(1)} s`);
  } finally {
    await server.stop();
    if (values.debug) log(`${DISPLAY_NAMES[name]}: scratch directory kept: ${scratchDir}`);
    else rmSync(scratchDir, { recursive: true, force: true });
  }
}
log('');
log(`| server | idle RSS | peak RSS | peak PSS | seconds |`);
log(`| --- | --- | --- | --- | --- |`);
for (const r of results) log(`| ${r.name} | ${mib(r.idleRss)} | ${mib(r.peakRss)} | ${mib(r.peakPss)} | ${r.seconds.toFixed(1)} |`);

/** `clients` sessions at once, each sending one message of `bytes` octets; every wait bounded. */
async function concurrentUploads(port: number, clients: number, bytes: number, timeoutMs: number, isDeclaringSize: boolean): Promise<{ ok: true; seconds: number } | { ok: false; error: string }> {
  // Whole 78-octet lines after a short header: about `bytes` octets, every line CRLF-ended.
  const header = Buffer.from('Subject: memory bench\r\n\r\n');
  const line = Buffer.from(`${'x'.repeat(76)}\r\n`);
  const body = Buffer.concat([header, Buffer.alloc(Math.floor(Math.max(0, bytes - header.length) / line.length) * line.length)]);
  for (let at = header.length; at < body.length; at += line.length) line.copy(body, at);
  const startedAt = performance.now();
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const socket = net.connect({ host: HOST, port });
      const timer = setTimeout(() => socket.destroy(new Error('timed out')), timeoutMs);
      let buffered = '';
      const steps = ['EHLO bench.client\r\n', `MAIL FROM:<sender@example.org>${isDeclaringSize ? ` SIZE=${body.length}` : ''}\r\n`, 'RCPT TO:<user@bench.test>\r\n', 'DATA\r\n', null, 'QUIT\r\n'];
      let step = -1;
      socket.setEncoding('latin1');
      socket.on('data', (text: string) => {
        buffered += text;
        for (;;) {
          const m = /^(\d{3}) .*\r\n/m.exec(buffered);
          if (m === null) return;
          buffered = buffered.slice(m.index + m[0].length);
          if (m[1][0] !== '2' && m[1][0] !== '3') return socket.destroy(new Error(`server said ${m[0].trim()}`));
          step++;
          if (step >= steps.length) return;
          const next = steps[step];
          if (next !== null) socket.write(next);
          else void upload();
        }
      });
      const upload = async (): Promise<void> => {
        for (let at = 0; at < body.length; at += 65536) {
          if (!socket.write(body.subarray(at, Math.min(body.length, at + 65536)))) await new Promise((r) => socket.once('drain', r));
        }
        socket.write('.\r\n');
      };
      socket.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.on('close', () => {
        clearTimeout(timer);
        if (step >= steps.length - 1) resolve();
        else reject(new Error(`closed at step ${step}`));
      });
    });
  const outcomes = await Promise.allSettled(Array.from({ length: clients }, one));
  const failed = outcomes.filter((o) => o.status === 'rejected');
  if (failed.length > 0) return { ok: false, error: `${failed.length} of ${clients} sessions failed: ${String((failed[0] as PromiseRejectedResult).reason)}` };
  return { ok: true, seconds: (performance.now() - startedAt) / 1000 };
}
