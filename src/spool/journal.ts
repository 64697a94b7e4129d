// Owns the write side of the spool: group commit of small messages into append-only segment
// files, one file per large message. Never resolves a commit before its bytes and the directory
// entry naming them are fsynced; never appends to a segment again after a failed write.
// Layout and byte format: docs/spool.md; encoding: format.ts.

import { link, mkdir, open, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import {
  encodeRecord,
  encodeRecordStart,
  FILE_HEADER,
  formatLocation,
  recordTrailer,
  isValidQueueId,
  MESSAGES_DIR,
  SEGMENTS_DIR,
  SpoolError,
  TMP_DIR,
} from './format.ts';
import type { EncodedRecord } from './format.ts';
import { crc32 } from 'node:zlib';
import type { AcceptedMessage } from '../message/accepted.ts';
import { BodyFile } from './body-file.ts';
import { envelopeOf } from './record.ts';
import { ensureDurableDir, fsyncDir, writeAll } from '../util/durable-fs.ts';
import type { Committed, Envelope, SpoolWriter } from './types.ts';

export { SpoolError } from './format.ts';
export type { SpoolErrorCode } from './format.ts';

/** Spool files hold mail: owner only (the umask can only narrow this). */
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

/** The read-and-write step of a large message's copy from its body file (one buffer per commit). */
const COPY_BUFFER_BYTES = 64 * 1024;

/** Writer ids end up in file names. */
const WRITER_ID_PATTERN = /^[A-Za-z0-9_]{1,32}$/;

export type JournalSpoolOptions = {
  dir: string;
  /** Bodies up to this many bytes go to the journal; larger ones get a file of their own. */
  journalMaxMessageBytes: number;
  /** A segment is closed and a new one started before it would grow past this. */
  segmentMaxBytes: number;
  /** Unique among the processes writing to `dir` at the same time, e.g. the pid. */
  writerId: string;
  /** Called with `segments/<file>` once this writer will never append to that segment again
   *  (rotated away from, abandoned after a failed write, or closed); every commit into it has
   *  settled by then. The queue scans and reclaims only sealed segments (docs/spool.md). */
  onSealed?: (segmentFile: string) => void;
  /** Called synchronously for each commit as it becomes durable, in the order the records are in
   *  the segment (before the commit's promise resolves): how a worker tells the queue manager, in
   *  an order its recovery can rely on (it scans a segment after the last record it knows). */
  onCommitted?: (committed: Committed, envelope: Envelope) => void;
};

export type JournalStats = {
  /** Commits resolved (journal and large-message paths). */
  commits: number;
  /** Commits rejected after they were accepted for writing. */
  failedCommits: number;
  /** Group-commit flushes: one writev and one fdatasync each. */
  flushes: number;
  /** Segment files created. */
  segments: number;
  /** Commits that took the file-per-message path. */
  largeMessages: number;
};

type Pending = {
  record: EncodedRecord;
  queueId: string;
  envelope: Envelope;
  resolve: (committed: Committed) => void;
  reject: (err: unknown) => void;
};

type Segment = {
  fh: FileHandle;
  name: string;
  /** Durability: the end of the last fsynced (acknowledged) record. Bytes past it belong to no
   *  acknowledged commit; after a failed flush the file is cut back to this. */
  validEnd: number;
};

export class JournalSpool implements SpoolWriter {
  readonly #dir: string;
  readonly #segmentsDir: string;
  readonly #messagesDir: string;
  readonly #tmpDir: string;
  readonly #journalMaxMessageBytes: number;
  readonly #segmentMaxBytes: number;
  readonly #writerId: string;
  readonly #onSealed: (segmentFile: string) => void;
  readonly #onCommitted: (committed: Committed, envelope: Envelope) => void;
  /** Segment names start with the open time so that a restarted writer with a reused pid still
   *  picks fresh names; `wx` (O_EXCL) catches the rest. */
  readonly #startMs: number;
  #segmentSeq = 0;

  #segment: Segment | null = null;
  #queue: Pending[] = [];
  /** The running flush loop; null when idle. At most one flush writes at a time. */
  #pump: Promise<void> | null = null;
  readonly #largeInFlight = new Set<Promise<Committed>>();
  #isClosed = false;
  /** Set when a failed write could not be undone: later commits are refused. */
  #unsafe: SpoolError | null = null;

  #commits = 0;
  #failedCommits = 0;
  #flushes = 0;
  #segments = 0;
  #largeMessages = 0;

  private constructor(options: JournalSpoolOptions) {
    this.#dir = options.dir;
    this.#segmentsDir = path.join(options.dir, SEGMENTS_DIR);
    this.#messagesDir = path.join(options.dir, MESSAGES_DIR);
    this.#tmpDir = path.join(options.dir, TMP_DIR);
    this.#journalMaxMessageBytes = options.journalMaxMessageBytes;
    this.#segmentMaxBytes = options.segmentMaxBytes;
    this.#writerId = options.writerId;
    this.#onSealed = options.onSealed ?? (() => undefined);
    this.#onCommitted = options.onCommitted ?? (() => undefined);
    this.#startMs = Date.now();
  }

  static async open(options: JournalSpoolOptions): Promise<JournalSpool> {
    // Security: the writer id becomes part of file names.
    if (!WRITER_ID_PATTERN.test(options.writerId)) {
      throw new TypeError('writerId must be 1-32 characters of [A-Za-z0-9_]');
    }
    if (!Number.isSafeInteger(options.journalMaxMessageBytes) || options.journalMaxMessageBytes < 0) {
      throw new TypeError('journalMaxMessageBytes must be a non-negative integer');
    }
    if (!Number.isSafeInteger(options.segmentMaxBytes) || options.segmentMaxBytes <= FILE_HEADER.length) {
      throw new TypeError('segmentMaxBytes must be an integer larger than the segment header');
    }
    const spool = new JournalSpool(options);
    await ensureDurableDir(spool.#dir);
    for (const dir of [spool.#segmentsDir, spool.#messagesDir, spool.#tmpDir]) {
      await mkdir(dir, { mode: DIR_MODE, recursive: true });
    }
    // Durability: the subdirectories' entries must survive a crash before anything inside them
    // is acknowledged.
    await fsyncDir(spool.#dir);
    return spool;
  }

  commit(message: AcceptedMessage, body: BodyFile | null = null): Promise<Committed> {
    if (message.rest.kind === 'memory') return this.commitEnvelope(envelopeOf(message), [...message.head, ...message.rest.chunks]);
    // A body that was too large to hold in memory always gets a file of its own, copied from its
    // body file without being held whole.
    if (body === null) return Promise.reject(new SpoolError('SPOOL_BAD_MESSAGE', 'a spilled body needs its body file'));
    if (this.#isClosed) return Promise.reject(new SpoolError('SPOOL_CLOSED', 'spool writer is closed'));
    if (this.#unsafe !== null) return Promise.reject(this.#unsafe);
    const envelope = envelopeOf(message);
    const { offset, bytes } = message.rest;
    const head = message.head;
    return this.#track(
      this.#commitFile(envelope, async (fh) => {
        let headBytes = 0;
        for (const c of head) headBytes += c.length;
        const start = encodeRecordStart(envelope, headBytes + bytes);
        let crc = start.crc;
        for (const c of head) crc = crc32(c, crc);
        let at = 0;
        await writeAll(fh, [FILE_HEADER, start.header, start.envelopeJson, ...head], at);
        at = FILE_HEADER.length + start.header.length + start.envelopeJson.length + headBytes;
        let copied = 0;
        // One buffer for the whole copy: each chunk is checksummed and written before the next read.
        const buffer = Buffer.allocUnsafe(Math.min(COPY_BUFFER_BYTES, Math.max(1, bytes)));
        for await (const chunk of body.readInto(buffer, offset, bytes)) {
          crc = crc32(chunk, crc);
          await writeAll(fh, [chunk], at);
          at += chunk.length;
          copied += chunk.length;
        }
        // Durability: a body file that lost octets must not become a record that claims them.
        if (copied !== bytes) throw new SpoolError('SPOOL_WRITE_FAILED', `body file held ${copied} of ${bytes} octets`);
        await writeAll(fh, [recordTrailer(crc)], at);
      }),
    );
  }

  bodyFile(name: string): BodyFile {
    return new BodyFile(this.#dir, name);
  }

  #track(done: Promise<Committed>): Promise<Committed> {
    this.#largeInFlight.add(done);
    const forget = (): void => {
      this.#largeInFlight.delete(done);
    };
    done.then(forget, forget);
    return done;
  }

  /** The record-level commit: an envelope and its content as they are to be stored. */
  commitEnvelope(envelope: Envelope, body: readonly Buffer[]): Promise<Committed> {
    if (this.#isClosed) return Promise.reject(new SpoolError('SPOOL_CLOSED', 'spool writer is closed'));
    if (this.#unsafe !== null) return Promise.reject(this.#unsafe);
    let record: EncodedRecord;
    try {
      // Encoded now: the envelope may change after this returns. The body buffers are kept by
      // reference (no copy), so the caller must leave them alone until the promise settles.
      record = encodeRecord(envelope, body);
    } catch (err) {
      return Promise.reject(err);
    }
    if (envelope.size > this.#journalMaxMessageBytes) {
      return this.#track(this.#commitFile(envelope, (fh) => writeAll(fh, [FILE_HEADER, ...record.chunks], 0)));
    }
    return new Promise<Committed>((resolve, reject) => {
      this.#queue.push({ record, queueId: envelope.queueId, envelope, resolve, reject });
      this.#startPump();
    });
  }

  async close(): Promise<void> {
    this.#isClosed = true;
    while (this.#pump !== null) await this.#pump;
    await Promise.allSettled([...this.#largeInFlight]);
    const segment = this.#segment;
    this.#segment = null;
    // Everything in it is already fsynced; a close error loses nothing acknowledged.
    if (segment !== null) {
      await segment.fh.close().catch(() => undefined);
      this.#seal(segment);
    }
  }

  #tellCommitted(committed: Committed, envelope: Envelope): void {
    try {
      this.#onCommitted(committed, envelope);
    } catch {
      // The listener's bug must not fail a commit that is durable.
    }
  }

  #seal(segment: Segment): void {
    try {
      this.#onSealed(`${SEGMENTS_DIR}/${segment.name}`);
    } catch {
      // The listener's bug must not fail a flush; a dead writer's segments are sealed anyway.
    }
  }

  stats(): JournalStats {
    return {
      commits: this.#commits,
      failedCommits: this.#failedCommits,
      flushes: this.#flushes,
      segments: this.#segments,
      largeMessages: this.#largeMessages,
    };
  }

  #startPump(): void {
    if (this.#pump === null) this.#pump = this.#runPump();
  }

  /** Group commit without timers: while one flush is on disk, new commits queue up, and the
   *  next flush takes all of them. Under load the batch grows by itself; when idle a commit is
   *  flushed at once. */
  async #runPump(): Promise<void> {
    // Let commits made in the same turn of the event loop join the first batch.
    await Promise.resolve();
    for (;;) {
      if (this.#queue.length === 0) {
        // Cleared in the same synchronous step as the emptiness check, so a commit arriving
        // afterwards always sees no pump and starts one.
        this.#pump = null;
        return;
      }
      const batch = this.#queue;
      this.#queue = [];
      await this.#flush(batch);
    }
  }

  /** Writes `batch` and settles every promise in it; never throws. */
  async #flush(batch: Pending[]): Promise<void> {
    let next = 0;
    try {
      if (this.#unsafe !== null) throw this.#unsafe;
      while (next < batch.length) {
        const segment = await this.#segmentFor(batch[next].record.bytes);
        // Take as many records as fit in this segment; always at least one, so a record larger
        // than segmentMaxBytes still gets written (alone, in a fresh segment).
        const chunks: Buffer[] = [];
        let bytes = 0;
        let end = next;
        do {
          for (const chunk of batch[end].record.chunks) chunks.push(chunk);
          bytes += batch[end].record.bytes;
          end++;
        } while (end < batch.length && segment.validEnd + bytes + batch[end].record.bytes <= this.#segmentMaxBytes);

        await writeAll(segment.fh, chunks, segment.validEnd);
        // Durability: fdatasync also flushes the file size, which reading the data back needs.
        await segment.fh.datasync();
        this.#flushes++;
        segment.validEnd += bytes;
        let offset = segment.validEnd - bytes;
        for (let i = next; i < end; i++) {
          const committed = { queueId: batch[i].queueId, location: formatLocation(SEGMENTS_DIR, segment.name, offset) };
          this.#tellCommitted(committed, batch[i].envelope);
          batch[i].resolve(committed);
          offset += batch[i].record.bytes;
        }
        this.#commits += end - next;
        next = end;
      }
    } catch (err) {
      // Durability: cut the segment back BEFORE rejecting. A rejected commit gets a 4xx and the
      // client retries; if its record stayed on disk, recovery would deliver it a second time.
      await this.#abandonSegment(err);
      const failure =
        err instanceof SpoolError ? err : new SpoolError('SPOOL_WRITE_FAILED', 'journal write failed', { cause: err });
      for (let i = next; i < batch.length; i++) batch[i].reject(failure);
      this.#failedCommits += batch.length - next;
    }
  }

  /** The current segment if `recordBytes` more fit in it, else a new, durable one. */
  async #segmentFor(recordBytes: number): Promise<Segment> {
    const current = this.#segment;
    if (current !== null) {
      const isEmpty = current.validEnd === FILE_HEADER.length;
      if (isEmpty || current.validEnd + recordBytes <= this.#segmentMaxBytes) return current;
      this.#segment = null;
      // Its records are fsynced already; a close error loses nothing acknowledged.
      await current.fh.close().catch(() => undefined);
      this.#seal(current);
    }
    const segment = await this.#createSegment();
    this.#segment = segment;
    return segment;
  }

  async #createSegment(): Promise<Segment> {
    for (let attempt = 0; ; attempt++) {
      this.#segmentSeq++;
      const name =
        `${String(this.#startMs).padStart(15, '0')}-${this.#writerId}-` +
        `${String(this.#segmentSeq).padStart(6, '0')}.seg`;
      const file = path.join(this.#segmentsDir, name);
      let fh: FileHandle;
      try {
        // Security/Durability: O_EXCL: never append to, or truncate, another writer's segment.
        fh = await open(file, 'wx', FILE_MODE);
      } catch (err) {
        if (isErrno(err, 'EEXIST') && attempt < 100) continue;
        throw err;
      }
      try {
        await writeAll(fh, [FILE_HEADER], 0);
        await fh.sync();
        // Durability: the segment's directory entry must be on disk before any record in it is
        // acknowledged; a file no directory names is gone after a crash.
        await fsyncDir(this.#segmentsDir);
      } catch (err) {
        await fh.close().catch(() => undefined);
        // A segment holding at most its header carries nothing; removing it is tidiness only.
        await unlink(file).catch(() => undefined);
        throw err;
      }
      this.#segments++;
      return { fh, name, validEnd: FILE_HEADER.length };
    }
  }

  /** After a failed flush: drop bytes past the last acknowledged record and stop using the
   *  segment. If even that fails, the spool refuses further commits. */
  async #abandonSegment(cause: unknown): Promise<void> {
    const segment = this.#segment;
    this.#segment = null;
    if (segment === null) return;
    try {
      await segment.fh.truncate(segment.validEnd);
      // fsync, not fdatasync: the shrunken size is the point.
      await segment.fh.sync();
    } catch (err) {
      this.#unsafe = new SpoolError(
        'SPOOL_UNSAFE',
        `could not cut segment ${segment.name} back to ${segment.validEnd} bytes after a failed write`,
        { cause: new AggregateError([cause, err]) },
      );
    }
    await segment.fh.close().catch(() => undefined);
    // Sealed only once cut back: what is left in it is exactly what was acknowledged. An unsafe
    // segment (the cut failed) is not reported: its tail may hold rejected records.
    if (this.#unsafe === null) this.#seal(segment);
  }

  /** A message too big to hold up the shared journal: written to tmp/, fsynced, then linked
   *  into messages/ and the directory fsynced. */
  async #commitFile(envelope: Envelope, write: (fh: FileHandle) => Promise<void>): Promise<Committed> {
    const queueId = envelope.queueId;
    // Security: checked in encodeRecord too; this is the line that builds paths from it.
    if (!isValidQueueId(queueId)) throw new SpoolError('SPOOL_BAD_MESSAGE', 'queue id is not a plain token');
    const tmpFile = path.join(this.#tmpDir, `${queueId}.${this.#writerId}`);
    const finalFile = path.join(this.#messagesDir, `${queueId}.msg`);
    let isLinked = false;
    try {
      const fh = await open(tmpFile, 'wx', FILE_MODE);
      try {
        await write(fh);
        await fh.sync();
      } finally {
        await fh.close();
      }
      // link, not rename: rename would silently replace an existing message with the same id
      // (an acknowledged one); link fails with EEXIST instead.
      await link(tmpFile, finalFile);
      isLinked = true;
      // Durability: the name in messages/ is what recovery finds.
      await fsyncDir(this.#messagesDir);
    } catch (err) {
      this.#failedCommits++;
      // Durability: whatever happened, nothing of a rejected commit may stay in messages/.
      if (isLinked) {
        try {
          await unlink(finalFile);
          await fsyncDir(this.#messagesDir);
        } catch (undoErr) {
          this.#unsafe = new SpoolError('SPOOL_UNSAFE', `could not remove ${queueId}.msg after a failed commit`, {
            cause: new AggregateError([err, undoErr]),
          });
        }
      }
      await unlink(tmpFile).catch(() => undefined);
      throw this.#unsafe ?? new SpoolError('SPOOL_WRITE_FAILED', 'message file write failed', { cause: err });
    }
    // The tmp name is scaffolding; a crash leaving it behind is cleaned by removeStaleTmp.
    await unlink(tmpFile).catch(() => undefined);
    this.#largeMessages++;
    this.#commits++;
    const committed = { queueId, location: formatLocation(MESSAGES_DIR, `${queueId}.msg`, FILE_HEADER.length) };
    this.#tellCommitted(committed, envelope);
    return committed;
  }
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}
