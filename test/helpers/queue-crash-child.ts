// Owns the child side of the queue's kill -9 test: a spool writer and a queue manager in one
// process, committing and delivering until killed. Prints `ACK id` when the spool commit
// resolves (the 250), `DLV id index` when the courier hands a recipient over (before it returns),
// and `REC id index` when the manager logs the delivery as recorded (durable). stdout to a pipe
// is synchronous, so the parent sees exactly the order of events. Never imported by production code.
//
//   node queue-crash-child.ts run <dir> <idPrefix> <count>   commit count messages, deliver, wait
//   node queue-crash-child.ts drain <dir>                    deliver what is queued, then exit

import type { Courier, DeliveryJob, RecipientResult } from '../../src/delivery/types.ts';
import { QueueManager } from '../../src/queue/manager.ts';
import { JournalSpool } from '../../src/spool/journal.ts';
import { bodyFor } from './spool-crash-child.ts';
import { envelopeFor } from './queue-fixtures.ts';

const out = (line: string): void => void process.stdout.write(`${line}\n`);

const courier: Courier = {
  async deliver(job: DeliveryJob): Promise<RecipientResult[]> {
    for await (const chunk of job.content()) void chunk;
    // Deliveries take a while, so that kills land in the middle of some.
    await new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 8)));
    for (const r of job.recipients) out(`DLV ${job.queueId} ${r.index}`);
    return job.recipients.map(() => ({ status: 'delivered', reply: { code: 250, enhanced: '2.0.0', lines: ['ok'] }, remoteMta: 'sink' }));
  },
  async close() {},
};

async function open(dir: string): Promise<QueueManager> {
  return QueueManager.open({
    spoolDir: dir,
    router: () => ({ destination: 'sink', route: { kind: 'smtp', host: '127.0.0.1', port: 25, tls: 'none' } }),
    courierFor: () => courier,
    compactMinRecords: 300,
    log: {
      info(obj, msg) {
        const o = obj as { queueId?: string; index?: number };
        if (msg === 'queue: delivered') out(`REC ${o.queueId} ${o.index}`);
      },
      warn: () => undefined,
      error: (obj, msg) => void process.stderr.write(`${msg} ${JSON.stringify(obj)}\n`),
    },
  });
}

async function run(dir: string, idPrefix: string, count: number): Promise<void> {
  const manager = await open(dir);
  const spool = await JournalSpool.open({
    dir,
    journalMaxMessageBytes: 8_192,
    segmentMaxBytes: 16 * 1024,
    writerId: `q${process.pid}`,
    // As a worker would: reports in commit order, synchronously from the writer.
    onCommitted: (c, envelope) => void manager.committed({ ...c, envelope }).catch(() => undefined),
    onSealed: (segment) => manager.sealed(segment),
  });
  let next = 0;
  const loop = async (): Promise<void> => {
    while (next < count) {
      const n = next++;
      const queueId = `${idPrefix}${n}`;
      const size = n % 17 === 16 ? 10_000 : 200 + (n % 50) * 10;
      const envelope = envelopeFor(queueId, size, { recipients: [{ address: 'a@sink.example' }, { address: 'b@sink.example' }] });
      await spool.commitEnvelope(envelope, bodyFor(queueId, size));
      out(`ACK ${queueId}`);
    }
  };
  await Promise.all(Array.from({ length: 4 }, loop));
  out('COMMITTED');
  // Bounded: the parent kills us long before.
  await new Promise((resolve) => setTimeout(resolve, 20_000));
}

async function drain(dir: string): Promise<void> {
  const manager = await open(dir);
  const deadline = Date.now() + 20_000;
  while (manager.list().length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  await manager.close();
  out(`DONE ${manager.list().length}`);
}

if (import.meta.main) {
  const [mode, dir, idPrefix = 'c', count = '300'] = process.argv.slice(2);
  if (dir === undefined) throw new Error('usage: queue-crash-child.ts run|drain <dir> [idPrefix count]');
  if (mode === 'run') await run(dir, idPrefix, Number(count));
  else if (mode === 'drain') await drain(dir);
  else throw new Error(`unknown mode ${mode}`);
}
