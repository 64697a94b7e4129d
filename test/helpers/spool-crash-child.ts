// Owns the child side of the spool's kill -9 and write-failure tests, and the deterministic
// message fixtures the spool tests share. Prints each queue id the moment commit() resolves
// (stdout to a pipe is synchronous on POSIX), so the parent knows exactly what was acknowledged.
// Never imported by production code.
//
//   node spool-crash-child.ts crash <dir> [idPrefix]  commit in 8 loops until killed (or 30 s)
//   node spool-crash-child.ts fsize <dir>             run under `ulimit -f`: a batch hits the limit

import { JournalSpool } from '../../src/spool/journal.ts';
import type { Envelope } from '../../src/spool/types.ts';

export function makeEnvelope(queueId: string, size: number): Envelope {
  return {
    version: 1,
    queueId,
    sessionId: `s-${queueId}`,
    receivedAt: '2025-01-01T00:00:00.000Z',
    client: { address: '192.0.2.1', port: 40000, heloName: 'client.example', isTls: false },
    reversePath: 'sender@example.org',
    body: '8BITMIME',
    smtputf8: false,
    recipients: [{ address: 'rcpt@example.com' }],
    size,
  };
}

/** Content derived from the queue id alone, in up to three chunks (the writer must pass a
 *  multi-buffer body through as it is). */
export function bodyFor(queueId: string, size: number): Buffer[] {
  const whole = Buffer.alloc(size, `${queueId}:0123456789abcdef\r\n`);
  const cut1 = Math.floor(size / 3);
  const cut2 = Math.floor((size * 2) / 3);
  return [whole.subarray(0, cut1), whole.subarray(cut1, cut2), whole.subarray(cut2)].filter((c) => c.length > 0);
}

/** Mostly journal-sized bodies, every 13th one large enough for its own file (crash mode's
 *  journalMaxMessageBytes is 16 KiB). */
export function crashSizeFor(n: number): number {
  return n % 13 === 12 ? 20_000 + (n % 7) * 100 : 50 + ((n * 7919) % 6000);
}

export const CRASH_OPTIONS = { journalMaxMessageBytes: 16_384, segmentMaxBytes: 128 * 1024 } as const;

async function crash(dir: string, idPrefix: string): Promise<void> {
  const spool = await JournalSpool.open({ dir, ...CRASH_OPTIONS, writerId: `crash${process.pid}` });
  const deadline = Date.now() + 30_000;
  let next = 0;
  const loop = async (): Promise<void> => {
    // Bounded in case the parent dies without killing us.
    while (Date.now() < deadline && next < 50_000) {
      const n = next++;
      const queueId = `${idPrefix}${n}`;
      const size = crashSizeFor(n);
      await spool.commitEnvelope(makeEnvelope(queueId, size), bodyFor(queueId, size));
      process.stdout.write(`ACK ${queueId}\n`);
    }
  };
  await Promise.all(Array.from({ length: 8 }, loop));
  await spool.close();
}

async function fileSizeLimit(dir: string): Promise<void> {
  // Past RLIMIT_FSIZE the kernel sends SIGXFSZ (default: dump core); with a handler installed
  // the write fails with EFBIG instead, which is the failure under test.
  process.on('SIGXFSZ', () => undefined);
  const spool = await JournalSpool.open({
    dir,
    journalMaxMessageBytes: 65_536,
    segmentMaxBytes: 1024 * 1024,
    writerId: 'fsize',
  });
  const settle = async (queueId: string, size: number): Promise<void> => {
    try {
      await spool.commitEnvelope(makeEnvelope(queueId, size), bodyFor(queueId, size));
      process.stdout.write(`ACK ${queueId}\n`);
    } catch (err) {
      process.stdout.write(`REJ ${queueId} ${String((err as { code?: unknown }).code)}\n`);
    }
  };
  // All in one turn, so one batch: its first records fit under the limit, the rest do not.
  await Promise.all(Array.from({ length: 20 }, (_, i) => settle(`f${i}`, 10_000)));
  // A failed segment is abandoned; the next commits go to a fresh one.
  await settle('after0', 3_000);
  await settle('after1', 3_000);
  await spool.close();
  process.stdout.write(`DONE ${JSON.stringify(spool.stats())}\n`);
}

if (import.meta.main) {
  const [mode, dir, idPrefix = 'c'] = process.argv.slice(2);
  if (dir === undefined) throw new Error('usage: spool-crash-child.ts crash|fsize <dir> [idPrefix]');
  if (mode === 'crash') await crash(dir, idPrefix);
  else if (mode === 'fsize') await fileSizeLimit(dir);
  else throw new Error(`unknown mode ${mode}`);
}
