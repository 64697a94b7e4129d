// Owns the queue manager: every accepted message from the moment a spool commit is reported
// until each recipient is delivered or failed and every notice it owes is handed over, then the
// message's removal and the reclamation of its spool files. Schedules attempts (schedule.ts),
// records each outcome durably before acting on it (state-log.ts), and hands one DeliveryJob per
// message and destination to a Courier. Never delivers a recipient recorded delivered or failed
// again; never forgets one that is not; never scans a segment a live writer may append to; never
// composes a DSN itself (onDsn does). RFC 5321 4.5.4.1 and 6.1, RFC 3461 4.1 and 5.2.2.3.
// docs/delivery.md "Queue".

import type { Courier, DeliveryJob, DeliveryReply, RecipientResult, Route } from '../delivery/types.ts';
import { DELIVERY_REPLY } from '../protocol/replies.ts';
import { listMessageFiles, listSegments, openMessage, scanSegmentFrom, SpoolContentReader } from '../spool/reader.ts';
import type { Envelope } from '../spool/types.ts';
import { removeSpoolFile, SegmentRefs } from './gc.ts';
import {
  DEFAULT_QUEUE_LIMITS,
  DestinationTable,
  expiresAtMs,
  isDelayNoticeDue,
  isExpired,
  nextAttemptMs,
  notifyAllows,
  systemClock,
  TimeHeap,
} from './schedule.ts';
import type { NoticeKind, QueueClock, QueueLimits } from './schedule.ts';
import { isFinal, parseLocation, QueueState } from './state.ts';
import type { MessageFacts, MessageState, QueueRecord, RecipientOutcome, RecipientStatus } from './state.ts';
import { QueueStateLog } from './state-log.ts';

export type RouteDecision = { destination: string; route: Route } | { refusal: DeliveryReply };

/** What the DSN composer gets: one notice per message and event, covering every recipient that
 *  shares it (RFC 3461 / 3464). The caller queues the DSN message (from the null reverse-path). */
export type QueueNotice = {
  queueId: string;
  kind: NoticeKind;
  /** Where the original is in the spool (for its headers or content, RET). */
  location: string;
  message: MessageFacts;
  recipients: Array<{
    index: number;
    address: string;
    notify?: MessageFacts['recipients'][number]['notify'];
    orcpt?: MessageFacts['recipients'][number]['orcpt'];
    status: RecipientStatus;
    reply: DeliveryReply | null;
    remoteMta: string | null;
    lastAttemptMs: number | null;
  }>;
  /** Delay notices: when the queue gives up (Will-Retry-Until). */
  willRetryUntilMs: number | null;
};

export type QueueLogger = {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
};

export type QueueManagerOptions = {
  spoolDir: string;
  router: (address: string) => RouteDecision;
  courierFor: (destination: string, route: Route) => Courier;
  onDsn?: (notice: QueueNotice) => Promise<void>;
  /** Told when the state log starts or stops failing (refuse MAIL with 452 4.3.1 meanwhile). */
  onHealth?: (isHealthy: boolean) => void;
  clock?: QueueClock;
  log?: QueueLogger;
  limits?: Partial<QueueLimits>;
  /** Writers still running at open: their segments are neither scanned nor sealed. */
  liveWriterIds?: readonly string[];
  /** State-log tuning (tests). */
  compactMinRecords?: number;
  stateRetryMs?: number;
};

export type QueueEntry = {
  queueId: string;
  size: number;
  arrivalMs: number;
  reversePath: string;
  isHeld: boolean;
  quarantine?: string;
  recipients: Array<{ address: string; status: RecipientStatus; nextAttemptMs: number; lastReply: DeliveryReply | null; isInFlight: boolean }>;
};

export type QueueShape = {
  /** Upper bounds of the age buckets in minutes; the last bucket is everything older. */
  bucketsMinutes: number[];
  rows: Array<{ destination: string; total: number; counts: number[] }>;
};

const SHAPE_BUCKETS_MINUTES = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

type Job = { queueId: string; destination: string; route: Route; indices: number[] };

type Attempt = { controller: AbortController; done: Promise<void> };

const SILENT_LOG: QueueLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

const CONTENT_UNREADABLE: DeliveryReply = DELIVERY_REPLY.queueContentUnreadable;
const LOCAL_ERROR: DeliveryReply = DELIVERY_REPLY.queueLocalError;
const BOUNCED_BY_OPERATOR: DeliveryReply = DELIVERY_REPLY.bouncedByOperator;
const MISSING_RESULT: DeliveryReply = DELIVERY_REPLY.queueNoResult;

export class QueueManager {
  readonly #opts: QueueManagerOptions;
  readonly #spoolDir: string;
  readonly #clock: QueueClock;
  readonly #logger: QueueLogger;
  readonly #limits: QueueLimits;
  readonly #state = new QueueState();
  readonly #refs = new SegmentRefs();
  readonly #dests: DestinationTable;
  #log!: QueueStateLog;
  /** Message content for couriers: segment files kept open, one pread for most messages. */
  readonly #reader: SpoolContentReader;

  readonly #heap = new TimeHeap();
  /** The wake time each message is scheduled for (heap entries that differ are stale). */
  readonly #wake = new Map<string, number>();
  #timer: { cancel(): void } | null = null;
  #timerAtMs = Infinity;
  /** Per destination, jobs waiting for room, in arrival order. */
  readonly #ready = new Map<string, Job[]>();
  /** Recipients in an attempt now, per message. */
  readonly #busy = new Map<string, Set<number>>();
  readonly #attempts = new Map<string, Set<Attempt>>();
  #active = 0;
  readonly #couriers = new Map<string, Courier>();
  /** Per message, the chain of state changes (results, notices, removal) so they never overlap. */
  readonly #chains = new Map<string, Promise<void>>();
  /** Per live segment, the ids removed from it (a late report must not bring one back). */
  readonly #removed = new Map<string, Set<string>>();
  /** 'added' records not yet durable. */
  readonly #adding = new Map<string, Promise<void>>();
  /** Writers that are gone (one id per process that ever wrote: a handful). */
  readonly #goneWriters = new Set<string>();
  /** Scans of sealed segments, one after the other. */
  #scanChain: Promise<void> = Promise.resolve();
  #isStopping = false;
  #isClosed = false;
  #isDispatching = false;
  #isImmediate = false;
  /** While recovering, nothing is started: the scan first learns the whole queue. */
  #isRecovering = true;

  private constructor(opts: QueueManagerOptions) {
    this.#opts = opts;
    this.#spoolDir = opts.spoolDir;
    this.#clock = opts.clock ?? systemClock;
    this.#logger = opts.log ?? SILENT_LOG;
    this.#limits = { ...DEFAULT_QUEUE_LIMITS, ...opts.limits };
    this.#dests = new DestinationTable(this.#limits);
    this.#reader = new SpoolContentReader(opts.spoolDir);
  }

  /** Loads the state log, finds what the spool holds that the log does not know, reclaims what
   *  is done, and starts delivering. */
  static async open(opts: QueueManagerOptions): Promise<QueueManager> {
    const m = new QueueManager(opts);
    await m.#recover();
    return m;
  }

  async #recover(): Promise<void> {
    const startedMs = this.#clock.nowMs();
    this.#log = await QueueStateLog.open(
      {
        spoolDir: this.#spoolDir,
        clock: this.#clock,
        compactMinRecords: this.#opts.compactMinRecords,
        retryMs: this.#opts.stateRetryMs,
        onHealth: (isHealthy, err) => {
          if (isHealthy) this.#logger.info({}, 'queue state writable again');
          else this.#logger.error({ err }, 'queue state cannot be written; records kept in memory and retried');
          this.#opts.onHealth?.(isHealthy);
        },
      },
      (record) => this.#state.apply(record),
    );
    const known = this.#state.messages.size;
    for (const msg of this.#state.messages.values()) this.#retainFile(msg.facts.location);
    const live = new Set(this.#opts.liveWriterIds ?? []);
    const pending: Array<Promise<void>> = [];
    let found = 0;
    const segments = await listSegments(this.#spoolDir);
    const existing = new Set(segments);
    for (const segment of segments) {
      if (live.has(writerOf(segment))) continue;
      found += await this.#scanSegment(segment, pending);
    }
    found += await this.#adoptMessageFiles(pending);
    // Marks of segments that are gone (reclaimed before a crash forgot them) mean nothing now.
    for (const segment of [...this.#state.marks.keys()]) if (!existing.has(segment)) this.#state.marks.delete(segment);
    this.#log.setSnapshotSource({ size: () => this.#state.snapshotSize, records: () => this.#state.snapshot() });
    await Promise.all(pending);
    // At start every writer but the live ones is gone: their segments are sealed.
    for (const segment of segments) if (!live.has(writerOf(segment))) this.#seal(segment);
    for (const msg of this.#state.messages.values()) this.#schedule(msg, 0);
    await this.#log.compactIfDue();
    this.#isRecovering = false;
    this.#arm();
    this.#logger.info(
      { known, found, messages: this.#state.messages.size, ms: this.#clock.nowMs() - startedMs },
      'queue recovered',
    );
  }

  /** Adds the segment's records after the last one the state knows; returns how many. */
  async #scanSegment(segment: string, pending: Array<Promise<void>>): Promise<number> {
    const mark = this.#state.marks.get(segment);
    let found = 0;
    for await (const entry of scanSegmentFrom(this.#spoolDir, segment, mark ?? 0, {
      onDamage: (d) => {
        if (d.kind !== 'torn') this.#logger.warn({ ...d }, 'queue: damaged spool record skipped');
      },
    })) {
      const at = parseLocation(entry.location);
      // The record at the mark is known (its message may be done and forgotten).
      if (mark !== undefined && at !== null && at.offset <= mark) continue;
      if (this.#state.messages.has(entry.envelope.queueId)) continue;
      pending.push(this.#add(entry.envelope, entry.location).catch(() => undefined));
      found++;
    }
    return found;
  }

  // ---- what the server reports ----

  /** A worker committed a message at `location`. Idempotent; resolves once the queue's record
   *  of it is durable (rejects with QUEUE_STATE_WRITE_FAILED while the disk is full: the message
   *  is delivered anyway and its record retried). Delivery starts at once.
   *
   *  Synchronous up to the append, and without a look at the disk: a live writer reports every
   *  commit in a segment before it reports the segment sealed (one ordered channel), so no report
   *  can come for a segment that was sealed, scanned and reclaimed — except from a writer that is
   *  gone, whose segments writerGone scans in full, so its late reports are dropped. */
  async committed(report: { queueId: string; location: string; envelope: Envelope }): Promise<void> {
    const { queueId, location, envelope } = report;
    if (this.#state.messages.has(queueId)) return this.#adding.get(queueId);
    const at = parseLocation(location);
    if (at === null) throw new TypeError(`bad location ${location}`);
    if (at.file.startsWith('segments/')) {
      // Already found by a scan, delivered and removed before this report came.
      if (this.#removed.get(at.file)?.has(queueId) === true) return;
      if (this.#refs.isSealed(at.file) || this.#goneWriters.has(writerOf(at.file))) return;
    }
    return this.#add(envelope, location);
  }

  /** A writer will never append to `segmentFile` again (JournalSpool's onSealed). */
  sealed(segmentFile: string): void {
    this.#scanChain = this.#scanChain.then(async () => {
      if (this.#isClosed) return;
      // Messages committed there whose report has not come (or never will): found now.
      const pending: Array<Promise<void>> = [];
      await this.#scanSegment(segmentFile, pending).catch((err: unknown) => {
        this.#logger.error({ err, segment: segmentFile }, 'queue: cannot scan a sealed segment');
      });
      await Promise.all(pending);
      this.#seal(segmentFile);
    });
  }

  /** A writer process is gone (it crashed or stopped): its segments are sealed, and message
   *  files nobody reported (a large message committed just before the writer died) are found
   *  now rather than at the next start. */
  async writerGone(writerId: string): Promise<void> {
    // From now on its reports are late: the scans below find everything it committed.
    this.#goneWriters.add(writerId);
    for (const segment of await listSegments(this.#spoolDir)) {
      if (writerOf(segment) === writerId && !this.#refs.isSealed(segment)) this.sealed(segment);
    }
    await this.#scanChain;
    // A message file does not name its writer: every unknown one is taken.
    const pending: Array<Promise<void>> = [];
    await this.#adoptMessageFiles(pending, writerId);
    await Promise.all(pending);
  }

  /** Adds every message file in messages/ the state does not know; returns how many. A file
   *  there is committed (renamed into place after its fsync); one whose report is still on its
   *  way from a live writer is taken now and its report is then a no-op; one removed meanwhile
   *  fails to open and is skipped (at recovery, when nothing removes files, that is damage). */
  async #adoptMessageFiles(pending: Array<Promise<void>>, goneWriterId?: string): Promise<number> {
    let found = 0;
    for (const { queueId, location } of await listMessageFiles(this.#spoolDir)) {
      if (this.#isClosed || this.#state.messages.has(queueId)) continue;
      const opened = await openMessage(this.#spoolDir, queueId, location);
      if (opened === null) {
        if (this.#isRecovering) this.#logger.warn({ queueId, location }, 'queue: unreadable message file left alone');
        continue;
      }
      if (this.#state.messages.has(queueId)) continue;
      if (goneWriterId !== undefined) this.#logger.info({ queueId, location, writerId: goneWriterId }, 'queue: unreported message file found');
      pending.push(this.#add(opened.envelope, location).catch(() => undefined));
      found++;
    }
    return found;
  }

  isHealthy(): boolean {
    return this.#log.isHealthy();
  }

  /** Nothing in flight, waiting for room, being recorded or about to be woken. */
  isIdle(): boolean {
    return this.#active === 0 && this.#ready.size === 0 && this.#chains.size === 0 && this.#adding.size === 0 && !this.#isImmediate;
  }

  // ---- operator commands ----

  list(): QueueEntry[] {
    const out: QueueEntry[] = [];
    for (const msg of this.#state.messages.values()) out.push(this.#entry(msg));
    return out;
  }

  show(queueId: string): (QueueEntry & { location: string; message: MessageFacts; recipientState: MessageState['recipients'] }) | null {
    const msg = this.#state.messages.get(queueId);
    if (msg === undefined) return null;
    return { ...this.#entry(msg), location: msg.facts.location, message: msg.facts, recipientState: msg.recipients.map((r) => ({ ...r })) };
  }

  /** Tries deferred recipients now: of one message (a queue id), of one recipient domain (and
   *  that destination's backoff forgotten), or all. Returns how many messages were woken. */
  flush(target?: string): number {
    const now = this.#clock.nowMs();
    const all = target === undefined || target === 'all';
    if (all) this.#dests.revive();
    else this.#dests.revive(target);
    let woken = 0;
    const wake = (msg: MessageState, match: (address: string) => boolean): void => {
      let isAny = false;
      for (const [i, r] of msg.recipients.entries()) {
        if (isFinal(r.status) || !match(msg.facts.recipients[i].address)) continue;
        r.nextAttemptMs = Math.min(r.nextAttemptMs, now);
        isAny = true;
      }
      if (isAny && !msg.isHeld) {
        this.#schedule(msg, now);
        woken++;
      }
    };
    if (all) for (const msg of this.#state.messages.values()) wake(msg, () => true);
    else {
      const msg = this.#state.messages.get(target);
      if (msg !== undefined) wake(msg, () => true);
      else {
        const domain = target.toLowerCase();
        for (const m of this.#state.messages.values()) wake(m, (a) => domainOf(a) === domain);
      }
    }
    this.#logger.info({ target: target ?? 'all', woken }, 'queue: flush');
    return woken;
  }

  async hold(queueId: string): Promise<boolean> {
    const msg = this.#state.messages.get(queueId);
    if (msg === undefined) return false;
    await this.#record({ t: 'hold', queueId });
    this.#logger.info({ queueId }, 'queue: held');
    return true;
  }

  async release(queueId: string): Promise<boolean> {
    const msg = this.#state.messages.get(queueId);
    if (msg === undefined) return false;
    await this.#record({ t: 'release', queueId });
    const now = this.#clock.nowMs();
    for (const r of msg.recipients) if (!isFinal(r.status)) r.nextAttemptMs = Math.min(r.nextAttemptMs, now);
    this.#schedule(msg, now);
    this.#logger.info({ queueId }, 'queue: released');
    return true;
  }

  /** Deletes a message without a notice (postsuper -d). */
  async remove(queueId: string): Promise<boolean> {
    if (!this.#state.messages.has(queueId)) return false;
    await this.#abortAttempts(queueId);
    await this.#serial(queueId, async () => {
      const msg = this.#state.messages.get(queueId);
      if (msg !== undefined) await this.#removeMessage(msg);
    });
    this.#logger.info({ queueId }, 'queue: deleted by the operator');
    return true;
  }

  /** Fails every recipient not yet done, with a failure notice as NOTIFY allows. */
  async bounce(queueId: string): Promise<boolean> {
    if (!this.#state.messages.has(queueId)) return false;
    await this.#abortAttempts(queueId);
    await this.#serial(queueId, async () => {
      const msg = this.#state.messages.get(queueId);
      if (msg === undefined) return;
      const now = this.#clock.nowMs();
      const outcomes: RecipientOutcome[] = [];
      for (const [index, r] of msg.recipients.entries()) {
        if (!isFinal(r.status)) outcomes.push({ index, status: 'failed', nextAttemptMs: 0, attemptMs: now, reply: BOUNCED_BY_OPERATOR, remoteMta: null });
      }
      if (outcomes.length > 0) await this.#record({ t: 'outcome', queueId, outcomes });
      await this.#afterOutcome(msg);
    });
    this.#logger.info({ queueId }, 'queue: bounced by the operator');
    return true;
  }

  /** qshape: recipients not yet done, per recipient domain and age. */
  shape(): QueueShape {
    const now = this.#clock.nowMs();
    const rows = new Map<string, { destination: string; total: number; counts: number[] }>();
    for (const msg of this.#state.messages.values()) {
      const ageMinutes = (now - msg.facts.arrivalMs) / 60_000;
      let bucket = SHAPE_BUCKETS_MINUTES.findIndex((b) => ageMinutes < b);
      if (bucket < 0) bucket = SHAPE_BUCKETS_MINUTES.length;
      for (const [i, r] of msg.recipients.entries()) {
        if (isFinal(r.status)) continue;
        const destination = domainOf(msg.facts.recipients[i].address);
        let row = rows.get(destination);
        if (row === undefined) {
          row = { destination, total: 0, counts: new Array<number>(SHAPE_BUCKETS_MINUTES.length + 1).fill(0) };
          rows.set(destination, row);
        }
        row.total++;
        row.counts[bucket]++;
      }
    }
    return { bucketsMinutes: [...SHAPE_BUCKETS_MINUTES], rows: [...rows.values()].sort((a, b) => b.total - a.total) };
  }

  stats(): { messages: number; active: number; ready: number; sealedSegments: number; log: ReturnType<QueueStateLog['stats']> } {
    let ready = 0;
    for (const jobs of this.#ready.values()) ready += jobs.length;
    return { messages: this.#state.messages.size, active: this.#active, ready, sealedSegments: this.#refs.sealedCount, log: this.#log.stats() };
  }

  /** Stops starting attempts; lets those in flight finish for `graceMs`, then aborts them (their
   *  recipients come back deferred) and records every result. */
  async drain(graceMs: number): Promise<void> {
    this.#isStopping = true;
    this.#timer?.cancel();
    this.#timer = null;
    this.#timerAtMs = Infinity;
    for (const jobs of this.#ready.values()) for (const job of jobs) this.#unbusy(job);
    this.#ready.clear();
    const all = (): Promise<unknown> => Promise.all([...this.#attempts.values()].flatMap((s) => [...s].map((a) => a.done)));
    if (this.#active > 0 && graceMs > 0) {
      let timer: { cancel(): void } | null = null;
      await Promise.race([all(), new Promise<void>((resolve) => (timer = this.#clock.setTimer(resolve, graceMs)))]);
      (timer as { cancel(): void } | null)?.cancel();
    }
    for (const set of this.#attempts.values()) for (const a of set) a.controller.abort();
    await all();
    await Promise.all([...this.#chains.values()]);
    await this.#scanChain;
  }

  async close(): Promise<void> {
    if (this.#isClosed) return;
    await this.drain(0);
    this.#isClosed = true;
    await Promise.allSettled([...this.#couriers.values()].map((c) => c.close()));
    this.#couriers.clear();
    await this.#reader.close();
    await this.#log.close();
  }

  // ---- internals ----

  #entry(msg: MessageState): QueueEntry {
    const busy = this.#busy.get(msg.facts.queueId);
    return {
      queueId: msg.facts.queueId,
      size: msg.facts.size,
      arrivalMs: msg.facts.arrivalMs,
      reversePath: msg.facts.reversePath,
      isHeld: msg.isHeld,
      ...(msg.facts.quarantine === undefined ? {} : { quarantine: msg.facts.quarantine }),
      recipients: msg.recipients.map((r, i) => ({
        address: msg.facts.recipients[i].address,
        status: r.status,
        nextAttemptMs: r.nextAttemptMs,
        lastReply: r.lastReply ?? null,
        isInFlight: busy?.has(i) === true,
      })),
    };
  }

  #add(envelope: Envelope, location: string): Promise<void> {
    const facts = factsOf(envelope, location);
    this.#state.apply({ t: 'added', message: facts });
    this.#retainFile(location);
    // Deferrable: lost in a crash, the spool's scan from its mark (or the message-file listing)
    // finds the message again; its first outcome's flush makes it durable anyway.
    const durable = this.#log.append({ t: 'added', message: facts }, { deferrable: true });
    const tracked = durable.finally(() => this.#adding.delete(facts.queueId));
    tracked.catch(() => undefined);
    this.#adding.set(facts.queueId, tracked);
    const msg = this.#state.messages.get(facts.queueId);
    if (msg !== undefined) {
      if (msg.isHeld) this.#logger.info({ queueId: facts.queueId, quarantine: facts.quarantine }, 'queue: held (quarantine)');
      this.#schedule(msg, this.#clock.nowMs());
    }
    return tracked;
  }

  #retainFile(location: string): void {
    const at = parseLocation(location);
    if (at !== null && at.file.startsWith('segments/')) this.#refs.retain(at.file);
  }

  #seal(segment: string): void {
    if (this.#refs.seal(segment)) void this.#reclaim(segment);
  }

  async #reclaim(segment: string): Promise<void> {
    try {
      await this.#reader.forget(segment);
      await removeSpoolFile(this.#spoolDir, segment);
      this.#refs.forget(segment);
      this.#state.marks.delete(segment);
      this.#removed.delete(segment);
    } catch (err) {
      this.#logger.error({ err, segment }, 'queue: cannot delete a spent segment');
    }
  }

  /** Applies a record now and waits until it is durable; while the disk refuses, until the log
   *  has written it on a retry. */
  async #record(record: QueueRecord, options?: { deferrable?: boolean }): Promise<void> {
    this.#state.apply(record);
    try {
      await this.#log.append(record, options);
    } catch {
      await this.#log.whenWritten();
    }
  }

  #serial(queueId: string, fn: () => Promise<void>): Promise<void> {
    const prev = this.#chains.get(queueId) ?? Promise.resolve();
    const next = prev.then(fn).catch((err: unknown) => {
      this.#logger.error({ err, queueId }, 'queue: internal error handling a message');
    });
    this.#chains.set(queueId, next);
    void next.then(() => {
      if (this.#chains.get(queueId) === next) this.#chains.delete(queueId);
    });
    return next;
  }

  /** Wakes `msg` at its earliest due recipient, but not before `notBeforeMs`. */
  #schedule(msg: MessageState, notBeforeMs: number): void {
    if (this.#isStopping) return;
    const busy = this.#busy.get(msg.facts.queueId);
    let next = Infinity;
    let isAllFinal = true;
    for (const [i, r] of msg.recipients.entries()) {
      if (isFinal(r.status)) continue;
      isAllFinal = false;
      if (busy?.has(i) === true) continue;
      next = Math.min(next, r.nextAttemptMs);
    }
    // Everything final: the wake only sends owed notices and removes the message.
    if (isAllFinal) next = 0;
    if (next === Infinity) return;
    const at = Math.max(next, notBeforeMs);
    const current = this.#wake.get(msg.facts.queueId);
    if (current !== undefined && current <= at) return;
    this.#wake.set(msg.facts.queueId, at);
    this.#heap.push(at, msg.facts.queueId);
    this.#arm();
  }

  #arm(): void {
    if (this.#isStopping || this.#isRecovering) return;
    const top = this.#heap.peekTime();
    if (top === undefined) return;
    // Due now (new mail, a flush): on the next turn, not through the clock. Zero delay is not
    // time, and new mail must go out at once (milliseconds from 250 to delivered).
    if (top <= this.#clock.nowMs()) {
      if (!this.#isImmediate) {
        this.#isImmediate = true;
        setImmediate(() => {
          this.#isImmediate = false;
          this.#runDue();
        });
      }
      return;
    }
    if (top >= this.#timerAtMs) return;
    this.#timer?.cancel();
    this.#timerAtMs = top;
    this.#timer = this.#clock.setTimer(() => {
      this.#timer = null;
      this.#timerAtMs = Infinity;
      this.#runDue();
    }, top - this.#clock.nowMs());
  }

  /** Wakes every message that is due (in bounded steps, so a queue of 100,000 does not stall
   *  the event loop), then starts what has room. */
  #runDue(): void {
    if (this.#isStopping) return;
    const now = this.#clock.nowMs();
    let steps = 0;
    while (steps < 2_000) {
      const top = this.#heap.peekTime();
      if (top === undefined || top > now) break;
      const entry = this.#heap.pop() as { timeMs: number; key: string };
      if (this.#wake.get(entry.key) !== entry.timeMs) continue;
      this.#wake.delete(entry.key);
      steps++;
      this.#wakeMessage(entry.key, now);
    }
    this.#dispatch();
    this.#arm();
  }

  #wakeMessage(queueId: string, now: number): void {
    const msg = this.#state.messages.get(queueId);
    if (msg === undefined) return;
    if (msg.recipients.every((r) => isFinal(r.status))) {
      void this.#serial(queueId, () => this.#afterOutcome(msg));
      return;
    }
    if (msg.isHeld) return;
    let busy = this.#busy.get(queueId);
    const jobs = new Map<string, Job>();
    const refused: RecipientOutcome[] = [];
    for (const [index, r] of msg.recipients.entries()) {
      if (isFinal(r.status) || busy?.has(index) === true || r.nextAttemptMs > now) continue;
      const decision = this.#route(msg.facts.recipients[index].address);
      if (decision === null) {
        r.nextAttemptMs = now + this.#limits.minBackoffMs;
        this.#schedule(msg, 0);
        continue;
      }
      if ('refusal' in decision) {
        refused.push({ index, status: 'failed', nextAttemptMs: 0, attemptMs: now, reply: decision.refusal, remoteMta: null });
        continue;
      }
      let job = jobs.get(decision.destination);
      if (job === undefined) {
        job = { queueId, destination: decision.destination, route: decision.route, indices: [] };
        jobs.set(decision.destination, job);
      }
      job.indices.push(index);
      if (busy === undefined) {
        busy = new Set();
        this.#busy.set(queueId, busy);
      }
      busy.add(index);
    }
    if (refused.length > 0) {
      void this.#serial(queueId, async () => {
        await this.#record({ t: 'outcome', queueId, outcomes: refused });
        await this.#afterOutcome(msg);
      });
    }
    for (const job of jobs.values()) {
      let list = this.#ready.get(job.destination);
      if (list === undefined) {
        list = [];
        this.#ready.set(job.destination, list);
      }
      list.push(job);
    }
  }

  /** null: the router threw (our bug or its data source): the recipient waits a backoff. */
  #route(address: string): RouteDecision | null {
    try {
      return this.#opts.router(address);
    } catch (err) {
      this.#logger.error({ err }, 'queue: router failed; deferring');
      return null;
    }
  }

  /** Starts queued jobs while there is room; jobs for a dead destination are deferred without
   *  an attempt (its backoff counts for them all). */
  #dispatch(): void {
    if (this.#isDispatching || this.#isStopping) return;
    this.#isDispatching = true;
    try {
      const now = this.#clock.nowMs();
      for (const [destination, jobs] of this.#ready) {
        if (this.#dests.isDead(destination, now)) {
          for (const job of jobs.splice(0)) this.#suspend(job, now);
        }
        while (jobs.length > 0 && this.#active < this.#limits.totalConcurrency && this.#dests.hasRoom(destination)) {
          this.#start(jobs.shift() as Job);
        }
        if (jobs.length === 0) this.#ready.delete(destination);
      }
    } finally {
      this.#isDispatching = false;
    }
  }

  #suspend(job: Job, now: number): void {
    const deadUntil = this.#dests.deadUntilMs(job.destination);
    const suspended: DeliveryReply = DELIVERY_REPLY.destinationSuspended(job.destination);
    const results: RecipientResult[] = job.indices.map(() => ({ status: 'deferred', reply: suspended, remoteMta: null }));
    void this.#serial(job.queueId, () => this.#settle(job, results, now, deadUntil, true));
  }

  #start(job: Job): void {
    const msg = this.#state.messages.get(job.queueId);
    if (msg === undefined) {
      this.#unbusy(job);
      return;
    }
    this.#active++;
    this.#dests.started(job.destination);
    const controller = new AbortController();
    const attempt: Attempt = { controller, done: Promise.resolve() };
    let set = this.#attempts.get(job.queueId);
    if (set === undefined) {
      set = new Set();
      this.#attempts.set(job.queueId, set);
    }
    set.add(attempt);
    attempt.done = (async () => {
      let results: RecipientResult[];
      let isLocal = false;
      try {
        // The content is opened only when the courier reads it (a discard route never does): the
        // manager already holds every envelope fact. A record that is missing or damaged then
        // fails the read, which every courier turns into a deferral (nothing half-sent completes).
        const reader = this.#reader;
        const logger = this.#logger;
        const location = msg.facts.location;
        const queueId = job.queueId;
        const size = msg.facts.size;
        const deliveryJob: DeliveryJob = {
            queueId: job.queueId,
            reversePath: msg.facts.reversePath,
            recipients: job.indices.map((index) => {
              const r = msg.facts.recipients[index];
              return { index, address: r.address, ...(r.notify === undefined ? {} : { notify: r.notify }), ...(r.orcpt === undefined ? {} : { orcpt: r.orcpt }) };
            }),
            bodyType: msg.facts.bodyType,
            smtputf8: msg.facts.smtputf8,
            ...(msg.facts.ret === undefined ? {} : { ret: msg.facts.ret }),
            ...(msg.facts.envid === undefined ? {} : { envid: msg.facts.envid }),
            size: msg.facts.size,
            async *content() {
              try {
                yield* reader.content(queueId, location, size);
              } catch (err) {
                logger.error({ err, queueId, location }, 'queue: message content missing or damaged');
                throw new Error(CONTENT_UNREADABLE.lines.join(' '));
              }
            },
          };
          results = await this.#courier(job.destination, job.route).deliver(deliveryJob, controller.signal);
      } catch (err) {
        isLocal = true;
        this.#logger.error({ err, queueId: job.queueId, destination: job.destination }, 'queue: courier threw (a bug); deferring');
        results = job.indices.map(() => ({ status: 'deferred', reply: LOCAL_ERROR, remoteMta: null }));
      }
      const now = this.#clock.nowMs();
      const isFailure = !isLocal && job.indices.every((_, i) => (results[i]?.status ?? 'deferred') === 'deferred');
      this.#active--;
      this.#dests.finished(job.destination, isFailure, now);
      set.delete(attempt);
      if (set.size === 0) this.#attempts.delete(job.queueId);
      await this.#serial(job.queueId, () => this.#settle(job, results, now, this.#dests.deadUntilMs(job.destination), false));
      this.#dispatch();
    })();
  }

  #courier(destination: string, route: Route): Courier {
    const key = `${destination}\u0000${JSON.stringify(route)}`;
    let c = this.#couriers.get(key);
    if (c === undefined) {
      c = this.#opts.courierFor(destination, route);
      this.#couriers.set(key, c);
    }
    return c;
  }

  #unbusy(job: Job): void {
    const busy = this.#busy.get(job.queueId);
    if (busy === undefined) return;
    for (const i of job.indices) busy.delete(i);
    if (busy.size === 0) this.#busy.delete(job.queueId);
  }

  /** Turns one attempt's results into recorded outcomes, then notices, removal, the next wake.
   *  Durability: the outcomes are fsynced before anything acts on them. Suspended attempts (a
   *  dead destination) that only defer are not recorded: nothing durable changed. */
  async #settle(job: Job, results: RecipientResult[], now: number, deadUntilMs: number, isSuspended: boolean): Promise<void> {
    this.#unbusy(job);
    const msg = this.#state.messages.get(job.queueId);
    if (msg === undefined) return;
    const outcomes: RecipientOutcome[] = [];
    const unrecorded: RecipientOutcome[] = [];
    for (const [i, index] of job.indices.entries()) {
      const r = msg.recipients[index];
      if (r === undefined || isFinal(r.status)) continue;
      const result = results[i] ?? { status: 'deferred', reply: MISSING_RESULT, remoteMta: null };
      const base = { index, attemptMs: now, reply: result.reply, remoteMta: result.remoteMta };
      if (result.status === 'delivered' || result.status === 'relayed') {
        outcomes.push({ ...base, status: 'delivered', nextAttemptMs: 0, ...(result.status === 'relayed' ? { isRelayed: true } : {}) });
      } else if (result.status === 'failed') {
        outcomes.push({ ...base, status: 'failed', nextAttemptMs: 0 });
      } else if (isExpired(msg.facts.arrivalMs, now, this.#limits)) {
        // RFC 5321 4.5.4.1: give up after the queue lifetime, with the last reason.
        outcomes.push({ ...base, status: 'failed', nextAttemptMs: 0 });
      } else {
        const next = Math.max(nextAttemptMs(msg.facts.arrivalMs, now, this.#limits), deadUntilMs);
        (isSuspended ? unrecorded : outcomes).push({ ...base, status: 'deferred', nextAttemptMs: next });
      }
    }
    if (unrecorded.length > 0) this.#state.apply({ t: 'outcome', queueId: job.queueId, outcomes: unrecorded });
    if (outcomes.length > 0) {
      // Deferrable: it waits for the next flush (at most 10 ms) instead of asking for one, and
      // nothing acts on it (notice, removal, log line) before it is durable. Lost in a crash, the
      // recipients are tried again: the duplicates a crash can cause are the deliveries of the
      // last flush window, as with Postfix, whose done-marks are not fsynced at all. Without
      // this, each attempt cost an fdatasync of its own, on the disk the spool's commits wait on.
      await this.#record({ t: 'outcome', queueId: job.queueId, outcomes }, { deferrable: true });
      // Logged once durable: a `delivered` line means it will never be delivered again.
      for (const o of outcomes) {
        this.#logger.info(
          // delayMs: from the 250 to the end of this attempt (Postfix's delay=).
          { queueId: job.queueId, index: o.index, destination: job.destination, status: o.status, code: o.reply.code, enhanced: o.reply.enhanced, remoteMta: o.remoteMta, delayMs: now - msg.facts.arrivalMs },
          `queue: ${o.status}`,
        );
      }
    }
    await this.#afterOutcome(msg);
  }

  /** Hands over owed notices, removes a finished message, or schedules its next wake. */
  async #afterOutcome(msg: MessageState): Promise<void> {
    if (!this.#state.messages.has(msg.facts.queueId)) return;
    const isOwing = await this.#sendNotices(msg);
    if (msg.recipients.every((r) => isFinal(r.status)) && !isOwing) {
      await this.#removeMessage(msg);
      return;
    }
    // A notice the composer could not take is tried again after the first backoff.
    this.#schedule(msg, isOwing ? this.#clock.nowMs() + this.#limits.minBackoffMs : 0);
  }

  /** One notice per kind covering every recipient that owes it; true if some are still owed. */
  async #sendNotices(msg: MessageState): Promise<boolean> {
    const facts = msg.facts;
    // RFC 5321 4.5.5 / RFC 3461 6.2: a message from the null reverse-path is never answered.
    if (facts.reversePath === '') return false;
    const now = this.#clock.nowMs();
    let isOwing = false;
    // One delay notice per message (as Postfix's delay_warning_time): a recipient that was still
    // in flight when the others were warned about is not warned about on its own later.
    const isDelayWarned = msg.recipients.some((r) => r.noticesSent?.includes('delay') === true);
    for (const kind of ['failure', 'relayed', 'success', 'delay'] as const) {
      if (kind === 'delay' && isDelayWarned) continue;
      const indices: number[] = [];
      for (const [i, r] of msg.recipients.entries()) {
        if (r.noticesSent?.includes(kind) === true || !notifyAllows(facts.recipients[i].notify, kind)) continue;
        const isDue =
          kind === 'failure' ? r.status === 'failed'
          : kind === 'relayed' ? r.status === 'delivered' && r.isRelayed === true
          : kind === 'success' ? r.status === 'delivered' && r.isRelayed !== true
          : r.status === 'deferred' && isDelayNoticeDue(facts.arrivalMs, now, this.#limits) && !(r.noticesSent?.includes('failure') ?? false);
        if (isDue) indices.push(i);
      }
      if (indices.length === 0) continue;
      const notice: QueueNotice = {
        queueId: facts.queueId,
        kind,
        location: facts.location,
        message: facts,
        recipients: indices.map((index) => {
          const r = msg.recipients[index];
          const q = facts.recipients[index];
          return {
            index,
            address: q.address,
            ...(q.notify === undefined ? {} : { notify: q.notify }),
            ...(q.orcpt === undefined ? {} : { orcpt: q.orcpt }),
            status: r.status,
            reply: r.lastReply ?? null,
            remoteMta: r.remoteMta ?? null,
            lastAttemptMs: r.lastAttemptMs ?? null,
          };
        }),
        willRetryUntilMs: kind === 'delay' ? expiresAtMs(facts.arrivalMs, this.#limits) : null,
      };
      if (this.#opts.onDsn !== undefined) {
        try {
          await this.#opts.onDsn(notice);
        } catch (err) {
          this.#logger.warn({ err, queueId: facts.queueId, kind }, 'queue: the DSN could not be queued; will try again');
          isOwing = true;
          continue;
        }
        this.#logger.info({ queueId: facts.queueId, kind, recipients: indices.length }, 'queue: notice handed over');
      }
      await this.#record({ t: 'notice', queueId: facts.queueId, kind, indices });
    }
    return isOwing;
  }

  /** Durability order: the message file goes (and its directory is fsynced), then the `removed`
   *  record, then the segment's reference: a crash in between leaves a message whose content is
   *  gone but whose recipients are all final (finished again at the next start), never a file
   *  the log has forgotten (it would be found and delivered again). */
  async #removeMessage(msg: MessageState): Promise<void> {
    const queueId = msg.facts.queueId;
    const at = parseLocation(msg.facts.location);
    if (at !== null && at.file.startsWith('messages/')) {
      try {
        await removeSpoolFile(this.#spoolDir, at.file);
      } catch (err) {
        this.#logger.error({ err, queueId }, 'queue: cannot delete a message file; will try again');
        this.#schedule(msg, this.#clock.nowMs() + this.#limits.minBackoffMs);
        return;
      }
    }
    this.#wake.delete(queueId);
    // Deferrable: lost in a crash, the message comes back with every recipient final and is
    // finished again (no delivery, no notice: those are recorded). The segment's reference is
    // released only once the record is durable.
    await this.#record({ t: 'removed', queueId }, { deferrable: true });
    if (at !== null && at.file.startsWith('segments/')) {
      let ids = this.#removed.get(at.file);
      if (ids === undefined) {
        ids = new Set();
        this.#removed.set(at.file, ids);
      }
      ids.add(queueId);
    }
    if (at !== null && at.file.startsWith('segments/') && this.#refs.release(at.file)) await this.#reclaim(at.file);
  }

  async #abortAttempts(queueId: string): Promise<void> {
    for (const jobs of this.#ready.values()) {
      for (let i = jobs.length - 1; i >= 0; i--) {
        if (jobs[i].queueId === queueId) {
          this.#unbusy(jobs[i]);
          jobs.splice(i, 1);
        }
      }
    }
    const set = this.#attempts.get(queueId);
    if (set === undefined) return;
    for (const a of set) a.controller.abort();
    await Promise.all([...set].map((a) => a.done));
  }
}

export function factsOf(envelope: Envelope, location: string): MessageFacts {
  const arrival = Date.parse(envelope.receivedAt);
  return {
    queueId: envelope.queueId,
    location,
    arrivalMs: Number.isFinite(arrival) ? arrival : 0,
    size: envelope.size,
    reversePath: envelope.reversePath,
    bodyType: envelope.body,
    smtputf8: envelope.smtputf8,
    ...(envelope.ret === undefined ? {} : { ret: envelope.ret }),
    ...(envelope.envid === undefined ? {} : { envid: envelope.envid }),
    recipients: envelope.recipients.map((r) => ({
      address: r.address,
      ...(r.notify === undefined ? {} : { notify: r.notify }),
      ...(r.orcpt === undefined ? {} : { orcpt: r.orcpt }),
    })),
    ...(envelope.quarantine === undefined ? {} : { quarantine: envelope.quarantine }),
  };
}

/** `segments/<startMs>-<writerId>-<seq>.seg` -> writerId. */
function writerOf(segment: string): string {
  const name = segment.slice(segment.lastIndexOf('/') + 1);
  const first = name.indexOf('-');
  const last = name.lastIndexOf('-');
  return name.slice(first + 1, last);
}

function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return (at < 0 ? '' : address.slice(at + 1)).toLowerCase();
}
