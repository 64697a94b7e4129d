// Owns what the queue tests share: a hand-driven clock (no test sleeps for a retry), an
// in-process courier whose answers the test scripts (the queue's peer, not the unit under test),
// and a spool writer that reports commits to a manager as a worker would. Never imported by
// production code.

import type { Courier, DeliveryJob, RecipientResult } from '../../src/delivery/types.ts';
import { JournalSpool } from '../../src/spool/journal.ts';
import type { Envelope } from '../../src/spool/types.ts';
import type { QueueClock } from '../../src/queue/schedule.ts';
import type { QueueManager } from '../../src/queue/manager.ts';
import { bodyFor } from './spool-crash-child.ts';

export class FakeClock implements QueueClock {
  #now: number;
  #timers: Array<{ at: number; fn: () => void; isCancelled: boolean }> = [];

  constructor(startMs = Date.parse('2026-01-01T00:00:00Z')) {
    this.#now = startMs;
  }

  nowMs(): number {
    return this.#now;
  }

  setTimer(fn: () => void, delayMs: number): { cancel(): void } {
    const timer = { at: this.#now + Math.max(0, delayMs), fn, isCancelled: false };
    this.#timers.push(timer);
    return { cancel: () => (timer.isCancelled = true) };
  }

  /** Moves time on by `ms`, firing due timers in order, with real I/O let through between
   *  (until `isIdle` holds, when given: what a fired timer started has finished). */
  async advance(ms: number, isIdle?: () => boolean): Promise<void> {
    const end = this.#now + ms;
    for (let guard = 0; guard < 10_000; guard++) {
      this.#timers = this.#timers.filter((t) => !t.isCancelled);
      this.#timers.sort((a, b) => a.at - b.at);
      const next = this.#timers[0];
      if (next === undefined || next.at > end) break;
      this.#timers.shift();
      this.#now = Math.max(this.#now, next.at);
      next.fn();
      await settle(1);
      if (isIdle !== undefined) await until(isIdle, 'the manager to be idle');
    }
    this.#now = end;
    await settle();
  }
}

/** Lets promises and a few rounds of real file I/O finish. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setTimeout(resolve, 2));
}

/** Polls (real time, bounded) until `check` holds. */
export async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

export type Answer = (job: DeliveryJob, signal: AbortSignal) => RecipientResult[] | Promise<RecipientResult[]>;

export const OK: RecipientResult = { status: 'delivered', reply: { code: 250, enhanced: '2.0.0', lines: ['ok'] }, remoteMta: 'mx.example' };
export const TEMP: RecipientResult = { status: 'deferred', reply: { code: 421, enhanced: '4.4.2', lines: ['try later'] }, remoteMta: 'mx.example' };
export const PERM: RecipientResult = { status: 'failed', reply: { code: 550, enhanced: '5.1.1', lines: ['no such user'] }, remoteMta: 'mx.example' };

export class FakeCourier implements Courier {
  answer: Answer;
  readonly jobs: DeliveryJob[] = [];
  readonly contents: Buffer[] = [];
  active = 0;
  maxActive = 0;

  constructor(answer: Answer = (job) => job.recipients.map(() => OK)) {
    this.answer = answer;
  }

  async deliver(job: DeliveryJob, signal: AbortSignal): Promise<RecipientResult[]> {
    this.jobs.push(job);
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      const parts: Buffer[] = [];
      for await (const chunk of job.content()) parts.push(chunk);
      this.contents.push(Buffer.concat(parts));
      return await this.answer(job, signal);
    } finally {
      this.active--;
    }
  }

  async close(): Promise<void> {}

  delivered(queueId: string): number {
    return this.jobs.filter((j) => j.queueId === queueId).length;
  }
}

export function envelopeFor(queueId: string, size: number, patch: Partial<Envelope> = {}): Envelope {
  return {
    version: 1,
    queueId,
    sessionId: `s-${queueId}`,
    receivedAt: new Date(Date.parse('2026-01-01T00:00:00Z')).toISOString(),
    client: { address: '192.0.2.1', port: 40000, heloName: 'client.example', isTls: false },
    reversePath: 'sender@example.org',
    body: '8BITMIME',
    smtputf8: false,
    recipients: [{ address: 'rcpt@example.com' }],
    size,
    ...patch,
  };
}

/** A spool writer whose commits (and seals) are reported to the manager, as a worker does. */
export async function openReportingSpool(
  dir: string,
  manager: () => QueueManager | null,
  options: { segmentMaxBytes?: number; journalMaxMessageBytes?: number; writerId?: string } = {},
): Promise<{ spool: JournalSpool; put(queueId: string, size?: number, patch?: Partial<Envelope>): Promise<string> }> {
  const spool = await JournalSpool.open({
    dir,
    journalMaxMessageBytes: options.journalMaxMessageBytes ?? 16_384,
    segmentMaxBytes: options.segmentMaxBytes ?? 1024 * 1024,
    writerId: options.writerId ?? 'w1',
    onSealed: (segment) => manager()?.sealed(segment),
  });
  return {
    spool,
    async put(queueId, size = 200, patch = {}) {
      const envelope = envelopeFor(queueId, size, patch);
      const { location } = await spool.commitEnvelope(envelope, bodyFor(queueId, size));
      await manager()?.committed({ queueId, location, envelope });
      return location;
    },
  };
}
