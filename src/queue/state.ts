// Owns the queue's per-recipient state model: the records of the queue-state log and how each
// one changes the in-memory state (replay after a crash and live updates use the same function,
// so they cannot disagree). Pure: no I/O, no clock. Replaying a record twice is harmless
// (a snapshot may repeat records written after it), and records for unknown messages are
// ignored (a removed message's late outcome).

import type { DeliveryReply } from '../delivery/types.ts';
import type { DsnNotify } from '../spool/types.ts';
import type { NoticeKind } from './schedule.ts';

export type QueuedRecipient = {
  address: string;
  notify?: DsnNotify;
  orcpt?: { addrType: string; address: string };
};

/** What the queue keeps of an envelope: enough to deliver and to write a DSN without the spool. */
export type MessageFacts = {
  queueId: string;
  /** `segments/<file>@<offset>` or `messages/<id>.msg@<offset>` (src/spool/reader.ts). */
  location: string;
  arrivalMs: number;
  size: number;
  /** '' is the null reverse-path. */
  reversePath: string;
  bodyType: '7BIT' | '8BITMIME' | 'BINARYMIME';
  smtputf8: boolean;
  ret?: 'FULL' | 'HDRS';
  envid?: string;
  recipients: QueuedRecipient[];
  /** A content check's tag: the message is held for an operator. */
  quarantine?: string;
};

export type RecipientStatus = 'pending' | 'deferred' | 'delivered' | 'failed';

export type RecipientState = {
  status: RecipientStatus;
  /** Delivered to a next hop without DSN while SUCCESS was asked (a `relayed` notice is owed). */
  isRelayed?: boolean;
  /** When to try again (pending: 0, at once). */
  nextAttemptMs: number;
  lastAttemptMs?: number;
  lastReply?: DeliveryReply;
  remoteMta?: string | null;
  /** Notices already sent for this recipient. */
  noticesSent?: NoticeKind[];
};

export type RecipientOutcome = {
  index: number;
  status: 'delivered' | 'deferred' | 'failed';
  isRelayed?: boolean;
  nextAttemptMs: number;
  attemptMs: number;
  reply: DeliveryReply;
  remoteMta: string | null;
};

export type QueueRecord =
  /** A message the queue owns from now on; `state` and `isHeld` are set in snapshots. */
  | { t: 'added'; message: MessageFacts; state?: RecipientState[]; isHeld?: boolean }
  | { t: 'outcome'; queueId: string; outcomes: RecipientOutcome[] }
  | { t: 'notice'; queueId: string; kind: NoticeKind; indices: number[] }
  | { t: 'hold'; queueId: string }
  | { t: 'release'; queueId: string }
  | { t: 'removed'; queueId: string }
  /** Every record of `segment` up to and including the one at `offset` is known (snapshots keep
   *  this for removed messages, so recovery never finds them again). */
  | { t: 'mark'; segment: string; offset: number };

export type MessageState = {
  facts: MessageFacts;
  recipients: RecipientState[];
  isHeld: boolean;
};

export class QueueState {
  readonly messages = new Map<string, MessageState>();
  /** Per segment (`segments/<file>`): the offset of the last record the queue knows in it. */
  readonly marks = new Map<string, number>();

  apply(record: QueueRecord): void {
    switch (record.t) {
      case 'added': {
        const m = record.message;
        this.#mark(m.location);
        if (this.messages.has(m.queueId)) return;
        this.messages.set(m.queueId, {
          facts: m,
          recipients: record.state ?? m.recipients.map(() => ({ status: 'pending', nextAttemptMs: 0 })),
          isHeld: record.isHeld ?? m.quarantine !== undefined,
        });
        return;
      }
      case 'outcome': {
        const msg = this.messages.get(record.queueId);
        if (msg === undefined) return;
        for (const o of record.outcomes) {
          const r = msg.recipients[o.index];
          // Security: a recipient once final stays final; no later record reopens it (that
          // would deliver it twice).
          if (r === undefined || r.status === 'delivered' || r.status === 'failed') continue;
          r.status = o.status;
          r.nextAttemptMs = o.nextAttemptMs;
          r.lastAttemptMs = o.attemptMs;
          r.lastReply = o.reply;
          r.remoteMta = o.remoteMta;
          if (o.isRelayed === true) r.isRelayed = true;
        }
        return;
      }
      case 'notice': {
        const msg = this.messages.get(record.queueId);
        if (msg === undefined) return;
        for (const i of record.indices) {
          const r = msg.recipients[i];
          if (r === undefined) continue;
          const sent = (r.noticesSent ??= []);
          if (!sent.includes(record.kind)) sent.push(record.kind);
        }
        return;
      }
      case 'hold':
      case 'release': {
        const msg = this.messages.get(record.queueId);
        if (msg !== undefined) msg.isHeld = record.t === 'hold';
        return;
      }
      case 'removed':
        this.messages.delete(record.queueId);
        return;
      case 'mark':
        this.#markAt(record.segment, record.offset);
        return;
    }
  }

  #mark(location: string): void {
    const parsed = parseLocation(location);
    if (parsed !== null && parsed.file.startsWith('segments/')) this.#markAt(parsed.file, parsed.offset);
  }

  #markAt(segment: string, offset: number): void {
    const known = this.marks.get(segment);
    if (known === undefined || offset > known) this.marks.set(segment, offset);
  }

  /** The records that rebuild this state (a compaction's snapshot), in an order replay accepts. */
  *snapshot(): Generator<QueueRecord> {
    for (const [segment, offset] of this.marks) yield { t: 'mark', segment, offset };
    for (const m of this.messages.values()) {
      yield { t: 'added', message: m.facts, state: m.recipients, isHeld: m.isHeld };
    }
  }

  get snapshotSize(): number {
    return this.marks.size + this.messages.size;
  }
}

export function parseLocation(location: string): { file: string; offset: number } | null {
  const at = location.lastIndexOf('@');
  if (at <= 0) return null;
  const offset = Number(location.slice(at + 1));
  if (!Number.isSafeInteger(offset)) return null;
  return { file: location.slice(0, at), offset };
}

export function isFinal(status: RecipientStatus): boolean {
  return status === 'delivered' || status === 'failed';
}
