// The queue at scale: N messages (default 100,000) queued to a destination that refuses
// connections (a closed loopback port: every attempt is a real connect that fails), then: the
// queue manager's memory, `queue list` and `qshape` time, and recovery time after a restart in a
// fresh process, from the state log and, as the worst case, from the spool alone (the log lost).
//
//   npm run -s bench:queue -- [--messages 100000] [--bytes 1024]
//
// Memory is the heap used after a full GC (--expose-gc) in a process holding only the manager,
// minus the same process before it opened the manager; RSS is reported as measured.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Courier, DeliveryJob, RecipientResult } from '../src/delivery/types.ts';
import { QueueManager } from '../src/queue/manager.ts';
import { JournalSpool } from '../src/spool/journal.ts';
import type { Envelope } from '../src/spool/types.ts';

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '100000' },
    bytes: { type: 'string', default: '1024' },
    recover: { type: 'string' },
    port: { type: 'string' },
  },
});

const gc = (globalThis as { gc?: () => void }).gc;
function heapMiB(): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed / 1048576;
}
const rssMiB = (): number => process.memoryUsage().rss / 1048576;

/** A closed port: bind, note the port, close. Connecting to it is refused at once. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function unreachableCourier(port: number): Courier & { attempts: number } {
  return {
    attempts: 0,
    async deliver(job: DeliveryJob): Promise<RecipientResult[]> {
      this.attempts++;
      const text = await new Promise<string>((resolve) => {
        const socket = net.connect({ host: '127.0.0.1', port });
        socket.once('connect', () => {
          socket.destroy();
          resolve('connected (unexpected)');
        });
        socket.once('error', (err: NodeJS.ErrnoException) => resolve(`connect to 127.0.0.1:${port}: ${err.code ?? 'error'}`));
      });
      return job.recipients.map(() => ({ status: 'deferred', reply: { code: 421, enhanced: '4.4.1', lines: [text] }, remoteMta: null }));
    },
    async close() {},
  };
}

function managerOptions(dir: string, courier: Courier) {
  return {
    spoolDir: dir,
    router: (address: string) => ({ destination: address.split('@')[1] ?? '', route: { kind: 'smtp' as const, host: '127.0.0.1', port: 25, tls: 'none' as const } }),
    courierFor: () => courier,
  };
}

/** The child: open the manager on an existing spool and report. */
async function recover(dir: string, port: number): Promise<void> {
  const before = heapMiB();
  const courier = unreachableCourier(port);
  const t0 = performance.now();
  const manager = await QueueManager.open(managerOptions(dir, courier));
  const recoverMs = performance.now() - t0;
  const t1 = performance.now();
  const listed = manager.list().length;
  const listMs = performance.now() - t1;
  const t2 = performance.now();
  const shape = manager.shape();
  const shapeMs = performance.now() - t2;
  const heap = heapMiB() - before;
  const rss = rssMiB();
  await manager.close();
  process.stdout.write(`${JSON.stringify({ recoverMs, listed, listMs, shapeMs, shapeRows: shape.rows.length, heapMiB: heap, rssMiB: rss })}\n`);
}

function runChild(dir: string, port: number): Record<string, number> {
  const self = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, ['--expose-gc', self, '--recover', dir, '--port', String(port)], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`recovery child failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, number>;
}

async function main(): Promise<void> {
  const count = Number(values.messages);
  const bytes = Number(values.bytes);
  const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-queue-bench-'));
  try {
    const port = await closedPort();
    const courier = unreachableCourier(port);
    const base = heapMiB();
    const manager = await QueueManager.open(managerOptions(dir, courier));
    const spool = await JournalSpool.open({ dir, journalMaxMessageBytes: 1 << 20, segmentMaxBytes: 64 << 20, writerId: 'bench', onSealed: (s) => manager.sealed(s) });
    const body = [Buffer.alloc(bytes, 'x')];
    const t0 = performance.now();
    let next = 0;
    const loop = async (): Promise<void> => {
      while (next < count) {
        const n = next++;
        const queueId = `b${n}`;
        const envelope: Envelope = {
          version: 1,
          queueId,
          sessionId: `s${n}`,
          receivedAt: new Date().toISOString(),
          client: { address: '192.0.2.1', port: 1, heloName: 'c.example', isTls: false },
          reversePath: 'sender@example.org',
          body: '7BIT',
          smtputf8: false,
          recipients: [{ address: `user${n % 1000}@unreachable${n % 10}.example` }],
          size: bytes,
        };
        const { location } = await spool.commitEnvelope(envelope, body);
        await manager.committed({ queueId, location, envelope });
      }
    };
    await Promise.all(Array.from({ length: 100 }, loop));
    const queueMs = performance.now() - t0;
    // Let the first attempts run until every destination is dead (deliveries stop).
    for (let i = 0; i < 200 && (manager.stats().active > 0 || manager.stats().ready > 0); i++) await new Promise((r) => setTimeout(r, 50));
    const heap = heapMiB() - base;
    const t1 = performance.now();
    const listed = manager.list().length;
    const listMs = performance.now() - t1;
    const attempts = courier.attempts;
    const stats = manager.stats();
    await spool.close();
    await manager.close();

    const fromLog = runChild(dir, port);
    // Worst case: the state log is gone; everything is found by scanning the spool.
    renameSync(path.join(dir, 'queue'), path.join(dir, 'queue.moved'));
    const fromSpool = runChild(dir, port);
    const result = {
      messages: count,
      bytes,
      queueSeconds: +(queueMs / 1000).toFixed(1),
      queuedPerSecond: Math.round(count / (queueMs / 1000)),
      connectAttempts: attempts,
      stateLogBytes: stats.log.fileBytes,
      liveHeapMiB: +heap.toFixed(1),
      liveListMs: Math.round(listMs),
      listed,
      fromLog: { recoverMs: Math.round(fromLog.recoverMs), listMs: Math.round(fromLog.listMs), shapeMs: Math.round(fromLog.shapeMs), heapMiB: +fromLog.heapMiB.toFixed(1), rssMiB: Math.round(fromLog.rssMiB), listed: fromLog.listed },
      fromSpoolOnly: { recoverMs: Math.round(fromSpool.recoverMs), heapMiB: +fromSpool.heapMiB.toFixed(1), rssMiB: Math.round(fromSpool.rssMiB), listed: fromSpool.listed },
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (values.recover !== undefined) await recover(values.recover, Number(values.port));
else await main();
