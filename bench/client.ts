// Outbound client benchmark: Portcullis's SmtpCourier against nodemailer's SMTPConnection, both
// sending N messages of 1 KiB to the same real smtp-sink over 1 connection and over 20
// concurrent connections (each reused for its share). Reports msgs/s and the client's CPU per
// 1,000 messages (this process only: both clients run here, the sink is a child process).
// Run: npx node bench/client.ts [--messages 2000] [--rounds 3]. Not part of `npm run bench`.
// Owns the smtp-sink it starts (stopped by its PID) and its temp dir; loopback only.
// nodemailer is a dev dependency for this comparison only; src/ never imports it.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { SmtpCourier } from '../src/delivery/smtp.ts';
import type { DeliveryJob } from '../src/delivery/types.ts';
import { findExecutable, HOST, stopTree, waitForBanner } from './util.ts';
import { freePort } from '../test/helpers/ports.ts';

const { values } = parseArgs({ options: { messages: { type: 'string', default: '2000' }, rounds: { type: 'string', default: '3' } } });
const MESSAGES = Number(values.messages);
const ROUNDS = Number(values.rounds);

const BODY = Buffer.from(`From: sender@example.org\r\nTo: user@bench.test\r\nSubject: bench\r\n\r\n${'0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n'.repeat(15)}`.slice(0, 1024 - 2) + '\r\n');

function job(i: number): DeliveryJob {
  return {
    queueId: `B${i}`,
    reversePath: 'sender@example.org',
    recipients: [{ index: 0, address: 'user@bench.test' }],
    bodyType: '7BIT',
    smtputf8: false,
    size: BODY.length,
    async *content() {
      yield BODY;
    },
  };
}

type Client = { name: string; run(port: number, connections: number): Promise<void> };

const ours: Client = {
  name: 'portcullis SmtpCourier',
  async run(port, connections) {
    const courier = new SmtpCourier({ hosts: [{ host: HOST, port }], heloName: 'bench.local', tls: 'none', cache: { maxIdlePerDestination: connections, maxUses: 1_000_000 } });
    let next = 0;
    const signal = new AbortController().signal;
    await Promise.all(
      Array.from({ length: connections }, async () => {
        while (next < MESSAGES) {
          const r = await courier.deliver(job(next++), signal);
          if (r[0].status !== 'delivered') throw new Error(`not delivered: ${JSON.stringify(r[0].reply)}`);
        }
      }),
    );
    await courier.close();
  },
};

const nodemailer: Client = {
  name: 'nodemailer SMTPConnection',
  async run(port, connections) {
    let next = 0;
    await Promise.all(
      Array.from({ length: connections }, async () => {
        const conn = new SMTPConnection({ host: HOST, port, name: 'bench.local', ignoreTLS: true });
        await new Promise<void>((resolve, reject) => {
          conn.once('error', reject);
          conn.connect(() => resolve());
        });
        let isFirst = true;
        while (next < MESSAGES) {
          next++;
          // As Postfix and our cache do: RSET before each reused transaction.
          if (!isFirst) await new Promise<void>((resolve, reject) => conn.reset((err) => (err ? reject(err) : resolve())));
          isFirst = false;
          await new Promise<void>((resolve, reject) => conn.send({ from: 'sender@example.org', to: ['user@bench.test'] }, BODY, (err) => (err ? reject(err) : resolve())));
        }
        conn.quit();
      }),
    );
  },
};

async function startSink(): Promise<{ port: number; stop: () => Promise<void> }> {
  const exe = findExecutable('smtp-sink') ?? '/usr/sbin/smtp-sink';
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-bench-client-'));
  const asRoot = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
  const child = spawn(exe, [...asRoot, `${HOST}:${port}`, '256'], { stdio: 'ignore' });
  let exitReason: string | undefined;
  child.once('exit', (code, sig) => (exitReason = `smtp-sink exited (${code ?? sig})`));
  await waitForBanner(port, 5000, () => exitReason);
  return {
    port,
    stop: async () => {
      await stopTree(child.pid!);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main(): Promise<void> {
  const sink = await startSink();
  const rows: string[] = [];
  try {
    for (const connections of [1, 20]) {
      for (const client of [nodemailer, ours]) {
        const rates: number[] = [];
        const cpus: number[] = [];
        for (let round = 0; round < ROUNDS; round++) {
          const cpu0 = process.cpuUsage();
          const t0 = process.hrtime.bigint();
          await client.run(sink.port, connections);
          const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
          const cpu = process.cpuUsage(cpu0);
          rates.push(MESSAGES / seconds);
          cpus.push(((cpu.user + cpu.system) / 1e6 / MESSAGES) * 1000);
        }
        const row = `| ${client.name} | ${connections} | ${median(rates).toFixed(0)} | ${median(cpus).toFixed(2)} |`;
        rows.push(row);
        console.error(row, `(rounds: ${rates.map((r) => r.toFixed(0)).join(', ')} msgs/s)`);
      }
    }
  } finally {
    await sink.stop();
  }
  console.log(`${MESSAGES} messages of ${BODY.length} octets to smtp-sink, median of ${ROUNDS} rounds, Node ${process.version}\n`);
  console.log('| client | connections | msgs/s | client CPU s per 1,000 msgs |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const r of rows) console.log(r);
}

await main();
