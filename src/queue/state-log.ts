// Owns the queue-state log: an append-only, checksummed file of QueueRecords in
// <spool>/queue/state-<seq>.log, group-committed like the spool journal (one write and one
// fdatasync acknowledge every record that arrived while the previous flush ran; never an fsync
// per event), and compacted into a snapshot of the live state when it is mostly dead.
// Never resolves an append before its bytes are fsynced; never believes a record whose checksum
// fails, and never reads past the first one (a torn tail after a crash). docs/delivery.md "Queue".
//
// Hand-written rather than sqlite or a LevelDB-like store: the queue needs exactly an ordered,
// group-committed append and a whole-file replay at start, which is ~300 lines over node:fs and
// shares the spool's durability rules; a database would add its own fsync policy to reason about.

import { open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import type { QueueClock } from './schedule.ts';
import type { QueueRecord } from './state.ts';
import { ensureDurableDir, fsyncDir, writeAll } from '../util/durable-fs.ts';

export const QUEUE_DIR = 'queue';
export const STATE_FILE_HEADER = Buffer.from('PORTCULLIS-QSTATE 1\n', 'latin1');
const STATE_FILE = /^state-([0-9]{10})\.log$/;
const RECORD_HEADER_BYTES = 8;
/** A record is one message's facts or one attempt's outcomes; anything near this is a bug. */
const MAX_RECORD_BYTES = 16 * 1024 * 1024;
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
/** Snapshot bytes per write. */
const SNAPSHOT_WRITE_BYTES = 1024 * 1024;
/** How long a deferrable record waits for a flush that something else asks for. */
export const DEFERRABLE_FLUSH_MS = 10;

export type StateLogErrorCode = 'QUEUE_STATE_WRITE_FAILED' | 'QUEUE_STATE_CLOSED';

export class StateLogError extends Error {
  readonly code: StateLogErrorCode;
  constructor(code: StateLogErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StateLogError';
    this.code = code;
  }
}

export type SnapshotSource = {
  /** How many records a snapshot would hold now. */
  size(): number;
  records(): Iterable<QueueRecord>;
};

export type StateLogOptions = {
  spoolDir: string;
  clock: QueueClock;
  /** Told when writing starts failing (a full disk) and when it works again. */
  onHealth?: (isHealthy: boolean, err?: unknown) => void;
  /** Compact once the file holds at least this many records and 4x the live state. */
  compactMinRecords?: number;
  /** While failing, how often the rejected records are tried again. */
  retryMs?: number;
};

export type StateLogStats = { records: number; flushes: number; compactions: number; fileRecords: number; fileBytes: number; isHealthy: boolean };

type Pending = { bytes: Buffer; resolve: () => void; reject: (err: unknown) => void };

export class QueueStateLog {
  readonly #dir: string;
  readonly #clock: QueueClock;
  readonly #onHealth: (isHealthy: boolean, err?: unknown) => void;
  readonly #compactMinRecords: number;
  readonly #retryMs: number;
  #source: SnapshotSource | null = null;

  #seq: number;
  #fh: FileHandle;
  /** Durability: the end of the last fsynced record; after a failed write the file is cut to it. */
  #validEnd: number;
  #fileRecords: number;
  #needsCut = false;
  /** Records whose write failed: written first by the next flush (their order kept), so a later
   *  record never becomes durable before an earlier one. */
  #retry: Buffer[] = [];
  #retryTimer: { cancel(): void } | null = null;
  #isRetryDue = false;
  #queue: Pending[] = [];
  #pump: Promise<void> | null = null;
  /** Flushes deferrable records nobody else flushed (real time: it batches I/O, it schedules nothing). */
  #deferTimer: ReturnType<typeof setTimeout> | null = null;
  /** Records in #queue that asked for a flush. */
  #urgent = 0;
  #isFlushForced = false;
  #isClosed = false;
  #isHealthy = true;
  #healthWaiters: Array<() => void> = [];
  /** After a failed compaction, wait for this many records before trying again. */
  #compactAtRecords = 0;

  #records = 0;
  #flushes = 0;
  #compactions = 0;

  private constructor(opts: StateLogOptions, seq: number, fh: FileHandle, validEnd: number, fileRecords: number) {
    this.#dir = path.join(opts.spoolDir, QUEUE_DIR);
    this.#clock = opts.clock;
    this.#onHealth = opts.onHealth ?? (() => undefined);
    this.#compactMinRecords = opts.compactMinRecords ?? 10_000;
    this.#retryMs = opts.retryMs ?? 2_000;
    this.#seq = seq;
    this.#fh = fh;
    this.#validEnd = validEnd;
    this.#fileRecords = fileRecords;
  }

  /** Opens (or creates) the log and replays every intact record into `onRecord`, in order. */
  static async open(opts: StateLogOptions, onRecord: (record: QueueRecord) => void): Promise<QueueStateLog> {
    const dir = path.join(opts.spoolDir, QUEUE_DIR);
    await ensureDurableDir(dir, DIR_MODE);
    const names = await readdir(dir);
    const seqs = names.flatMap((n) => {
      const m = STATE_FILE.exec(n);
      return m === null ? [] : [Number(m[1])];
    });
    seqs.sort((a, b) => a - b);
    let seq = seqs.at(-1) ?? 0;
    if (seq === 0) {
      seq = 1;
      await writeWhole(dir, seq, [STATE_FILE_HEADER]);
    }
    const file = path.join(dir, stateName(seq));
    const buf = await readFile(file);
    let validEnd = STATE_FILE_HEADER.length;
    let fileRecords = 0;
    // A state file is renamed into place only once complete, so its header is always whole.
    if (!buf.subarray(0, STATE_FILE_HEADER.length).equals(STATE_FILE_HEADER)) {
      throw new Error(`${file}: not a queue state file of this version`);
    }
    for (;;) {
      const decoded = decodeAt(buf, validEnd);
      if (decoded === null) break;
      onRecord(decoded.record);
      validEnd = decoded.end;
      fileRecords++;
    }
    const fh = await open(file, 'r+');
    if (buf.length > validEnd) {
      // Durability: a torn tail must go before anything is appended after it, or the next
      // records would sit behind bytes no replay can cross.
      await fh.truncate(validEnd);
      await fh.sync();
    }
    // Older files were replaced by a snapshot (rename, then fsync of the directory); a .tmp is an
    // unfinished snapshot. Neither is read.
    for (const n of names) {
      const m = STATE_FILE.exec(n);
      if ((m !== null && Number(m[1]) < seq) || /^state-[0-9]{10}\.log\.tmp$/.test(n)) await unlink(path.join(dir, n)).catch(() => undefined);
    }
    return new QueueStateLog(opts, seq, fh, validEnd, fileRecords);
  }

  /** Where compaction takes the live state from (the manager's QueueState). */
  setSnapshotSource(source: SnapshotSource): void {
    this.#source = source;
  }

  /** Resolves once the record is durable. Rejects (QUEUE_STATE_WRITE_FAILED) when its flush
   *  failed; the record is then kept and written first by a later flush, so nothing is lost
   *  and order is kept; whenWritten() tells when that happened.
   *
   *  A `deferrable` record does not ask for a flush of its own: it rides with the next one that
   *  another record asks for, or goes at most DEFERRABLE_FLUSH_MS later. For records whose loss
   *  in a crash the recovery repairs by itself (a message's `added`: the spool scan finds it
   *  again; its `removed`: a message whose recipients are all final is finished again), so that
   *  a message delivered at once costs one fdatasync, its outcome's, not three. Order is kept:
   *  one queue, written in append order, so a durable record implies every earlier one is. */
  append(record: QueueRecord, options?: { deferrable?: boolean }): Promise<void> {
    if (this.#isClosed) return Promise.reject(new StateLogError('QUEUE_STATE_CLOSED', 'queue state log is closed'));
    const bytes = encodeRecord(record);
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ bytes, resolve, reject });
      if (options?.deferrable !== true) {
        this.#urgent++;
        this.#startPump();
      } else if (this.#pump === null) this.#armDeferred();
    });
  }

  isHealthy(): boolean {
    return this.#isHealthy;
  }

  /** Resolves when no rejected record is waiting to be written again. */
  whenWritten(): Promise<void> {
    if (this.#retry.length === 0 && this.#isHealthy) return Promise.resolve();
    return new Promise((resolve) => this.#healthWaiters.push(resolve));
  }

  stats(): StateLogStats {
    return {
      records: this.#records,
      flushes: this.#flushes,
      compactions: this.#compactions,
      fileRecords: this.#fileRecords,
      fileBytes: this.#validEnd,
      isHealthy: this.#isHealthy,
    };
  }

  /** Writes a snapshot now if the log is mostly dead (also checked before every flush). */
  async compactIfDue(): Promise<void> {
    while (this.#pump !== null) await this.#pump;
    if (this.#isCompactionDue()) await this.#compact();
  }

  async close(): Promise<void> {
    // Records still queued or kept for retry get one last flush.
    if (this.#retry.length > 0) this.#isRetryDue = true;
    // Deferrable records too: nothing waits for a timer after close.
    while (this.#pump !== null || this.#queue.length > 0) {
      this.#isFlushForced = true;
      this.#startPump();
      await this.#pump;
    }
    if (this.#deferTimer !== null) clearTimeout(this.#deferTimer);
    this.#deferTimer = null;
    this.#isClosed = true;
    this.#retryTimer?.cancel();
    this.#retryTimer = null;
    await this.#fh.close().catch(() => undefined);
    for (const w of this.#healthWaiters.splice(0)) w();
  }

  #armDeferred(): void {
    if (this.#deferTimer !== null || this.#isClosed) return;
    this.#deferTimer = setTimeout(() => {
      this.#deferTimer = null;
      this.#isFlushForced = true;
      this.#startPump();
    }, DEFERRABLE_FLUSH_MS);
  }

  #startPump(): void {
    if (this.#deferTimer !== null) {
      clearTimeout(this.#deferTimer);
      this.#deferTimer = null;
    }
    if (this.#pump === null) this.#pump = this.#runPump();
  }

  async #runPump(): Promise<void> {
    // Records appended in the same turn of the event loop share the first flush.
    await Promise.resolve();
    for (;;) {
      // Only deferrable records waiting: they wait for the next asked-for flush, or the timer.
      if ((this.#queue.length === 0 || (this.#urgent === 0 && !this.#isFlushForced)) && !this.#isRetryDue) {
        this.#pump = null;
        if (this.#queue.length > 0) this.#armDeferred();
        return;
      }
      const batch = this.#queue;
      this.#queue = [];
      this.#urgent = 0;
      this.#isFlushForced = false;
      this.#isRetryDue = false;
      await this.#flush(batch);
    }
  }

  async #flush(batch: Pending[]): Promise<void> {
    if (this.#isCompactionDue()) await this.#compact();
    const chunks = [...this.#retry, ...batch.map((p) => p.bytes)];
    if (chunks.length === 0) return;
    let bytes = 0;
    for (const c of chunks) bytes += c.length;
    try {
      if (this.#needsCut) await this.#cut();
      await writeAll(this.#fh, chunks, this.#validEnd);
      await this.#fh.datasync();
    } catch (err) {
      this.#needsCut = true;
      // Durability: cut back now if the disk lets us; else before the next write.
      await this.#cut().catch(() => undefined);
      for (const p of batch) this.#retry.push(p.bytes);
      const failure = new StateLogError('QUEUE_STATE_WRITE_FAILED', 'queue state write failed', { cause: err });
      for (const p of batch) p.reject(failure);
      this.#setHealthy(false, err);
      this.#scheduleRetry();
      return;
    }
    this.#validEnd += bytes;
    this.#fileRecords += chunks.length;
    this.#records += chunks.length;
    this.#flushes++;
    this.#retry = [];
    for (const p of batch) p.resolve();
    this.#setHealthy(true);
  }

  async #cut(): Promise<void> {
    await this.#fh.truncate(this.#validEnd);
    await this.#fh.sync();
    this.#needsCut = false;
  }

  #scheduleRetry(): void {
    if (this.#retryTimer !== null || this.#isClosed) return;
    this.#retryTimer = this.#clock.setTimer(() => {
      this.#retryTimer = null;
      if (this.#retry.length === 0 || this.#isClosed) return;
      this.#isRetryDue = true;
      this.#startPump();
    }, this.#retryMs);
  }

  #setHealthy(isHealthy: boolean, err?: unknown): void {
    if (isHealthy && this.#retry.length === 0) {
      for (const w of this.#healthWaiters.splice(0)) w();
    }
    if (isHealthy === this.#isHealthy) return;
    this.#isHealthy = isHealthy;
    try {
      this.#onHealth(isHealthy, err);
    } catch {
      // The listener's bug must not break the flush loop.
    }
  }

  #isCompactionDue(): boolean {
    if (this.#source === null) return false;
    if (this.#fileRecords < this.#compactMinRecords || this.#fileRecords < this.#compactAtRecords) return false;
    return this.#fileRecords > 4 * this.#source.size();
  }

  /** Writes the live state to a new file (tmp, fsync, rename, fsync of the directory), then
   *  drops the old one. Runs inside the flush loop, so no append lands in the old file after the
   *  snapshot was taken. The snapshot holds every record applied to the state, including those
   *  waiting for a retry and the current batch (written again after it: replay is idempotent). */
  async #compact(): Promise<void> {
    const source = this.#source;
    if (source === null) return;
    const nextSeq = this.#seq + 1;
    const chunks: Buffer[] = [STATE_FILE_HEADER];
    let count = 0;
    for (const record of source.records()) {
      chunks.push(encodeRecord(record));
      count++;
    }
    let fh: FileHandle;
    try {
      await writeWhole(this.#dir, nextSeq, chunks);
      fh = await open(path.join(this.#dir, stateName(nextSeq)), 'r+');
    } catch {
      // The old file stays the log; try again once it has doubled.
      this.#compactAtRecords = this.#fileRecords * 2;
      return;
    }
    const old = this.#fh;
    const oldSeq = this.#seq;
    this.#fh = fh;
    this.#seq = nextSeq;
    let size = 0;
    for (const c of chunks) size += c.length;
    this.#validEnd = size;
    this.#fileRecords = count;
    this.#needsCut = false;
    this.#retry = [];
    this.#compactAtRecords = 0;
    this.#compactions++;
    await old.close().catch(() => undefined);
    await unlink(path.join(this.#dir, stateName(oldSeq))).catch(() => undefined);
  }
}

function stateName(seq: number): string {
  return `state-${String(seq).padStart(10, '0')}.log`;
}

/** len u32 | crc32(payload) u32 | payload (the record as UTF-8 JSON). */
export function encodeRecord(record: QueueRecord): Buffer {
  const payload = Buffer.from(JSON.stringify(record), 'utf8');
  if (payload.length > MAX_RECORD_BYTES) throw new RangeError('queue state record too large');
  const out = Buffer.allocUnsafe(RECORD_HEADER_BYTES + payload.length);
  out.writeUInt32BE(payload.length, 0);
  out.writeUInt32BE(crc32(payload), 4);
  payload.copy(out, RECORD_HEADER_BYTES);
  return out;
}

/** The record at `offset`, or null at the end or at the first damaged byte (a torn tail). */
export function decodeAt(buf: Buffer, offset: number): { record: QueueRecord; end: number } | null {
  if (buf.length - offset < RECORD_HEADER_BYTES) return null;
  const length = buf.readUInt32BE(offset);
  // A zero length would be a run of zeros (crc32 of nothing is 0): what a torn tail can hold.
  if (length === 0 || length > MAX_RECORD_BYTES) return null;
  const end = offset + RECORD_HEADER_BYTES + length;
  if (end > buf.length) return null;
  const payload = buf.subarray(offset + RECORD_HEADER_BYTES, end);
  if (crc32(payload) !== buf.readUInt32BE(offset + 4)) return null;
  let record: unknown;
  try {
    record = JSON.parse(payload.toString('utf8'));
  } catch {
    return null;
  }
  if (typeof record !== 'object' || record === null || typeof (record as { t?: unknown }).t !== 'string') return null;
  return { record: record as QueueRecord, end };
}

/** A complete state file: tmp, fsync, rename, fsync of the directory. */
async function writeWhole(dir: string, seq: number, chunks: Buffer[]): Promise<void> {
  const final = path.join(dir, stateName(seq));
  const tmp = `${final}.tmp`;
  await unlink(tmp).catch(() => undefined);
  const fh = await open(tmp, 'wx', FILE_MODE);
  try {
    let at = 0;
    let group: Buffer[] = [];
    let groupBytes = 0;
    for (const c of chunks) {
      group.push(c);
      groupBytes += c.length;
      if (groupBytes >= SNAPSHOT_WRITE_BYTES) {
        await writeAll(fh, group, at);
        at += groupBytes;
        group = [];
        groupBytes = 0;
      }
    }
    if (group.length > 0) await writeAll(fh, group, at);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fh.close();
  await rename(tmp, final);
  await fsyncDir(dir);
}
