// Owns the read side of the spool: recovery scans, listing, reading one message back, and
// removing stale tmp/ files. Never writes to segments or messages/; never returns a record whose
// checksum fails, and never looks for records anywhere but at boundaries reached from a file's
// start (see decodeRecord).

import { open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import {
  checkFileHeader,
  decodeRecord,
  decodeRecordHeader,
  FILE_HEADER,
  formatLocation,
  isValidQueueId,
  MESSAGES_DIR,
  RECORD_HEADER_BYTES,
  RECORD_OVERHEAD_BYTES,
  SEGMENTS_DIR,
  TMP_DIR,
} from './format.ts';
import type { Envelope } from './types.ts';

export type SpoolEntry = {
  envelope: Envelope;
  /** `<segments|messages>/<file>@<byte offset of the record>`; pass it to readMessage. */
  location: string;
};

export type SpoolDamage = {
  /** Relative to the spool dir, e.g. `segments/…seg`. */
  file: string;
  offset: number;
  /** torn: an unfinished write (expected after a crash; nothing acknowledged is lost).
   *  corrupt: a complete record whose checksum or envelope fails (media damage or a bug).
   *  foreign: a file that is not in this format or version. */
  kind: 'torn' | 'corrupt' | 'foreign';
  reason: string;
};

export type ScanOptions = {
  /** Called once per damaged spot; the scan skips it and goes on. */
  onDamage?: (damage: SpoolDamage) => void;
};

const SEGMENT_NAME = /^[0-9]{15}-[A-Za-z0-9_]{1,32}-[0-9]{6,}\.seg$/;
const MESSAGE_NAME = /^([A-Za-z0-9_-]{1,64})\.msg$/;
const LOCATION = /^(segments\/[0-9]{15}-[A-Za-z0-9_]{1,32}-[0-9]{6,}\.seg|messages\/[A-Za-z0-9_-]{1,64}\.msg)@([0-9]{1,15})$/;

/** Every valid record in the spool: journal segments in name order (oldest writer start first),
 *  then large-message files. Reads whole files, one at a time.
 *  Durability: a segment a live writer is appending to may end in records whose commit has not
 *  resolved yet (and may still fail and be cut off). Scan at startup, before writers run, or
 *  only segments their writers have closed. */
export async function* scanSpool(dir: string, options: ScanOptions = {}): AsyncGenerator<SpoolEntry> {
  const report = options.onDamage ?? (() => undefined);
  for (const name of await listFiles(path.join(dir, SEGMENTS_DIR), SEGMENT_NAME)) {
    const file = `${SEGMENTS_DIR}/${name}`;
    const buf = await readIfPresent(path.join(dir, file));
    if (buf === null) continue;
    for (const item of recordsIn(buf, file)) {
      if ('damage' in item) report(item.damage);
      else yield { envelope: item.envelope, location: formatLocation(SEGMENTS_DIR, name, item.offset) };
    }
  }
  for (const name of await listFiles(path.join(dir, MESSAGES_DIR), MESSAGE_NAME)) {
    const file = `${MESSAGES_DIR}/${name}`;
    const buf = await readIfPresent(path.join(dir, file));
    if (buf === null) continue;
    const expectedId = MESSAGE_NAME.exec(name)?.[1];
    let count = 0;
    for (const item of recordsIn(buf, file)) {
      if ('damage' in item) {
        report(item.damage);
        continue;
      }
      count++;
      // Security: a message file holds exactly one record, for the id in its name; anything
      // else was not written by the journal and is not trusted.
      if (count > 1) {
        report({ file, offset: item.offset, kind: 'corrupt', reason: 'more than one record in a message file' });
      } else if (item.envelope.queueId !== expectedId) {
        report({ file, offset: item.offset, kind: 'corrupt', reason: 'queue id differs from the file name' });
      } else {
        yield { envelope: item.envelope, location: formatLocation(MESSAGES_DIR, name, item.offset) };
      }
    }
  }
}

/** One message with its content. With `location` (from scanSpool) only that record is read;
 *  without, messages/<queueId>.msg and then every segment are searched.
 *  Security: a location is trusted to be a record boundary, so it must come from scanSpool or
 *  our own store, never from outside. Returns null when nothing valid is found. */
export async function readMessage(
  dir: string,
  queueId: string,
  location?: string,
): Promise<{ envelope: Envelope; content: Buffer } | null> {
  if (!isValidQueueId(queueId)) return null;
  if (location !== undefined) return readAt(dir, queueId, location);

  const messageFile = `${MESSAGES_DIR}/${queueId}.msg`;
  const own = await readAt(dir, queueId, `${messageFile}@${FILE_HEADER.length}`);
  if (own !== null) return own;
  for (const name of await listFiles(path.join(dir, SEGMENTS_DIR), SEGMENT_NAME)) {
    const buf = await readIfPresent(path.join(dir, SEGMENTS_DIR, name));
    if (buf === null) continue;
    for (const item of recordsIn(buf, `${SEGMENTS_DIR}/${name}`)) {
      if (!('damage' in item) && item.envelope.queueId === queueId) {
        // A copy, so that the caller does not pin the whole segment in memory.
        return { envelope: item.envelope, content: Buffer.from(item.body) };
      }
    }
  }
  return null;
}

/** The valid records of one segment from `fromOffset` on (a record boundary that came from a
 *  location, or the end of the file header), without reading what lies before it: how the queue
 *  finds messages it was never told about in a sealed segment. Bodies are not copied out; an
 *  entry's envelope is all a caller keeps.
 *  Durability: only for segments their writer has sealed (or whose writer is gone). */
export async function* scanSegmentFrom(
  dir: string,
  segmentFile: string,
  fromOffset: number,
  options: ScanOptions = {},
): AsyncGenerator<SpoolEntry> {
  const report = options.onDamage ?? (() => undefined);
  const name = segmentFile.startsWith(`${SEGMENTS_DIR}/`) ? segmentFile.slice(SEGMENTS_DIR.length + 1) : segmentFile;
  if (!SEGMENT_NAME.test(name)) throw new TypeError(`not a segment name: ${segmentFile}`);
  const file = `${SEGMENTS_DIR}/${name}`;
  let fh: FileHandle;
  try {
    fh = await open(path.join(dir, file), 'r');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return;
    throw err;
  }
  let buf: Buffer;
  try {
    const head = Buffer.alloc(FILE_HEADER.length);
    const got = (await fh.read(head, 0, head.length, 0)).bytesRead;
    const header = checkFileHeader(head.subarray(0, got));
    if (header.kind !== 'ok') {
      report({ file, offset: 0, kind: header.kind, reason: 'file header' });
      return;
    }
    const start = Math.max(fromOffset, FILE_HEADER.length);
    const { size } = await fh.stat();
    buf = Buffer.allocUnsafe(Math.max(0, size - start));
    let filled = 0;
    while (filled < buf.length) {
      const { bytesRead } = await fh.read(buf, filled, buf.length - filled, start + filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    buf = buf.subarray(0, filled);
    for (const item of recordsFrom(buf, 0, start, file)) {
      if ('damage' in item) report(item.damage);
      else yield { envelope: item.envelope, location: formatLocation(SEGMENTS_DIR, name, item.offset) };
    }
  } finally {
    await fh.close();
  }
}

/** The names of the segment files, oldest writer start first (`segments/<file>`). */
export async function listSegments(dir: string): Promise<string[]> {
  return (await listFiles(path.join(dir, SEGMENTS_DIR), SEGMENT_NAME)).map((name) => `${SEGMENTS_DIR}/${name}`);
}

/** The queue ids that have a message file, with the file's location. */
export async function listMessageFiles(dir: string): Promise<Array<{ queueId: string; location: string }>> {
  const out: Array<{ queueId: string; location: string }> = [];
  for (const name of await listFiles(path.join(dir, MESSAGES_DIR), MESSAGE_NAME)) {
    const queueId = MESSAGE_NAME.exec(name)?.[1];
    if (queueId !== undefined) out.push({ queueId, location: formatLocation(MESSAGES_DIR, name, FILE_HEADER.length) });
  }
  return out;
}

/** Streamed read size for message content: a 1 GiB message is never held whole. */
const STREAM_CHUNK_BYTES = 256 * 1024;

export type OpenedMessage = {
  envelope: Envelope;
  /** The content in pieces of at most 256 KiB. The record CRC is checked before the last piece
   *  is yielded: a damaged record throws instead of ending, so a courier never completes a
   *  message whose bytes are not the ones stored. */
  content(): AsyncIterable<Buffer>;
};

/** Like readMessage with a location, but reads only the frame and envelope now and streams the
 *  content on demand (each content() call reads the file again). Null when nothing valid is
 *  there. Security: the same trust rule for `location` as readMessage. */
export async function openMessage(dir: string, queueId: string, location: string): Promise<OpenedMessage | null> {
  if (!isValidQueueId(queueId)) return null;
  const match = LOCATION.exec(location);
  if (match === null) return null;
  const offset = Number(match[2]);
  if (offset < FILE_HEADER.length) return null;
  if (match[1].startsWith(`${MESSAGES_DIR}/`) && match[1] !== `${MESSAGES_DIR}/${queueId}.msg`) return null;
  const file = path.join(dir, match[1]);
  let fh: FileHandle;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
  let envelope: Envelope;
  let bodyStart: number;
  let bodyBytes: number;
  let crcBeforeBody: number;
  try {
    const head = Buffer.alloc(FILE_HEADER.length);
    if (!(await readExactly(fh, head, 0)) || checkFileHeader(head).kind !== 'ok') return null;
    const recordHeader = Buffer.alloc(RECORD_HEADER_BYTES);
    if (!(await readExactly(fh, recordHeader, offset))) return null;
    const lengths = decodeRecordHeader(recordHeader, 0);
    if ('problem' in lengths) return null;
    const { size } = await fh.stat();
    if (offset + lengths.recordBytes > size) return null;
    const envelopeJson = Buffer.allocUnsafe(lengths.envelopeBytes);
    if (!(await readExactly(fh, envelopeJson, offset + RECORD_HEADER_BYTES))) return null;
    let parsed: unknown;
    try {
      parsed = JSON.parse(envelopeJson.toString('utf8'));
    } catch {
      return null;
    }
    const candidate = parsed as Partial<Envelope> | null;
    if (candidate === null || typeof candidate !== 'object' || candidate.queueId !== queueId || candidate.size !== lengths.bodyBytes) return null;
    envelope = candidate as Envelope;
    bodyStart = offset + RECORD_HEADER_BYTES + lengths.envelopeBytes;
    bodyBytes = lengths.bodyBytes;
    crcBeforeBody = crc32(envelopeJson, crc32(recordHeader));
  } finally {
    await fh.close();
  }
  return {
    envelope,
    async *content() {
      const body = await open(file, 'r');
      try {
        yield* streamBody(body, bodyStart, bodyBytes, crcBeforeBody, location);
      } finally {
        await body.close();
      }
    },
  };
}

/** The first read of a record's content when its size is not known: header, envelope and, for
 *  most messages, the whole body and trailer in one pread. */
const FIRST_READ_BYTES = 64 * 1024;
/** With the body's size known: room for it, the record's frame and a generous envelope, up to
 *  this much in one read (past it, the body streams in pieces anyway). */
const FIRST_READ_MAX_BYTES = 1024 * 1024;
const ENVELOPE_ALLOWANCE_BYTES = 16 * 1024;

type CachedHandle = { fh: Promise<FileHandle>; users: number; lastUse: number; isForgotten: boolean };

/** Reads message content for delivery, many messages at a time, with as little I/O as the
 *  record allows: segment files stay open (a small cache, least recently used closed first), and
 *  a message up to ~64 KiB is one pread (header, envelope, body, trailer) instead of the ten
 *  calls of openMessage. Each read checks what openMessage checks (the file header once per
 *  open, the record header's CRC, the envelope names this queue id and size, the record CRC
 *  before the last piece is given out) and throws on any failure: a courier never completes a
 *  message whose bytes are not the ones stored. Security: the same trust rule for `location`. */
export class SpoolContentReader {
  readonly #dir: string;
  readonly #maxOpen: number;
  readonly #open = new Map<string, CachedHandle>();
  #clock = 0;

  constructor(dir: string, options: { maxOpen?: number } = {}) {
    this.#dir = dir;
    this.#maxOpen = options.maxOpen ?? 32;
  }

  /** The body of the record at `location`, in pieces of at most 256 KiB (or, when `sizeHint`
   *  (the body's size, as the queue knows it) lets it fit, in one piece of one read). */
  async *content(queueId: string, location: string, sizeHint?: number): AsyncGenerator<Buffer> {
    if (!isValidQueueId(queueId)) throw new Error(`${location}: not a queue id`);
    const match = LOCATION.exec(location);
    if (match === null) throw new Error(`${location}: not a spool location`);
    const file = match[1];
    const offset = Number(match[2]);
    if (offset < FILE_HEADER.length) throw new Error(`${location}: bad offset`);
    const isSegment = file.startsWith(`${SEGMENTS_DIR}/`);
    if (!isSegment && file !== `${MESSAGES_DIR}/${queueId}.msg`) throw new Error(`${location}: not this message's file`);
    const handle = isSegment ? this.#acquire(file) : { fh: openChecked(path.join(this.#dir, file)), users: 1, lastUse: 0, isForgotten: true };
    try {
      const fh = await handle.fh;
      const firstBytes = sizeHint === undefined ? FIRST_READ_BYTES : Math.min(FIRST_READ_MAX_BYTES, RECORD_OVERHEAD_BYTES + ENVELOPE_ALLOWANCE_BYTES + sizeHint);
      const first = Buffer.allocUnsafe(firstBytes);
      const { bytesRead } = await fh.read(first, 0, first.length, offset);
      const lengths = decodeRecordHeader(first.subarray(0, bytesRead), 0);
      if ('problem' in lengths) throw new Error(`${location}: ${lengths.problem}`);
      const envelopeEnd = RECORD_HEADER_BYTES + lengths.envelopeBytes;
      const envelopeJson = envelopeEnd <= bytesRead ? first.subarray(RECORD_HEADER_BYTES, envelopeEnd) : Buffer.allocUnsafe(lengths.envelopeBytes);
      if (envelopeEnd > bytesRead && !(await readExactly(fh, envelopeJson, offset + RECORD_HEADER_BYTES))) throw new Error(`${location}: record cut short`);
      let envelope: Partial<Envelope> | null;
      try {
        envelope = JSON.parse(envelopeJson.toString('utf8')) as Partial<Envelope> | null;
      } catch {
        throw new Error(`${location}: envelope is not JSON`);
      }
      if (envelope === null || typeof envelope !== 'object' || envelope.queueId !== queueId || envelope.size !== lengths.bodyBytes) {
        throw new Error(`${location}: the record is not message ${queueId}`);
      }
      const crc = crc32(envelopeJson, crc32(first.subarray(0, RECORD_HEADER_BYTES)));
      if (lengths.recordBytes <= bytesRead) {
        // The whole record in the first read: the common case.
        const body = first.subarray(envelopeEnd, envelopeEnd + lengths.bodyBytes);
        if (crc32(body, crc) !== first.readUInt32BE(envelopeEnd + lengths.bodyBytes)) throw new Error(`${location}: record checksum mismatch`);
        if (body.length > 0) yield body;
        return;
      }
      yield* streamBody(fh, offset + envelopeEnd, lengths.bodyBytes, crc, location);
    } finally {
      this.#release(file, handle);
    }
  }

  /** The file is about to be deleted (a reclaimed segment): its handle is closed once unused. */
  async forget(file: string): Promise<void> {
    const h = this.#open.get(file);
    if (h === undefined) return;
    this.#open.delete(file);
    h.isForgotten = true;
    if (h.users === 0) await closeQuietly(h.fh);
  }

  async close(): Promise<void> {
    await Promise.all([...this.#open.keys()].map((f) => this.forget(f)));
  }

  get openFiles(): number {
    return this.#open.size;
  }

  #acquire(file: string): CachedHandle {
    let h = this.#open.get(file);
    if (h === undefined) {
      h = { fh: openChecked(path.join(this.#dir, file)), users: 0, lastUse: 0, isForgotten: false };
      // A failed open is not cached: the next read tries again (or finds the file gone).
      const failed = h;
      h.fh.catch(() => {
        if (this.#open.get(file) === failed) this.#open.delete(file);
      });
      this.#open.set(file, h);
    }
    h.users++;
    h.lastUse = ++this.#clock;
    this.#evict();
    return h;
  }

  #release(file: string, h: CachedHandle): void {
    h.users--;
    if (h.users === 0 && h.isForgotten) void closeQuietly(h.fh);
    else if (h.users === 0) this.#evict();
  }

  #evict(): void {
    while (this.#open.size > this.#maxOpen) {
      let victim: [string, CachedHandle] | null = null;
      for (const entry of this.#open) if (entry[1].users === 0 && (victim === null || entry[1].lastUse < victim[1].lastUse)) victim = entry;
      if (victim === null) return;
      this.#open.delete(victim[0]);
      victim[1].isForgotten = true;
      void closeQuietly(victim[1].fh);
    }
  }
}

/** The body at `bodyStart` in pieces of at most 256 KiB, the record CRC (seeded with what came
 *  before the body) checked before the last piece is given out: a damaged record throws instead
 *  of ending. */
async function* streamBody(fh: FileHandle, bodyStart: number, bodyBytes: number, crcBeforeBody: number, location: string): AsyncGenerator<Buffer> {
  let crc = crcBeforeBody;
  let at = 0;
  let held: Buffer | null = null;
  while (at < bodyBytes) {
    const piece = Buffer.allocUnsafe(Math.min(STREAM_CHUNK_BYTES, bodyBytes - at));
    if (!(await readExactly(fh, piece, bodyStart + at))) throw new Error(`${location}: record cut short`);
    crc = crc32(piece, crc);
    at += piece.length;
    // One piece behind, so that the last one is given out only after the CRC checks out.
    if (held !== null) yield held;
    held = piece;
  }
  const trailer = Buffer.alloc(4);
  if (!(await readExactly(fh, trailer, bodyStart + bodyBytes)) || trailer.readUInt32BE(0) !== crc) {
    throw new Error(`${location}: record checksum mismatch`);
  }
  if (held !== null) yield held;
}

/** Opens a spool file for reading and checks its file header (format and version). */
async function openChecked(file: string): Promise<FileHandle> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(FILE_HEADER.length);
    if (!(await readExactly(fh, head, 0)) || checkFileHeader(head).kind !== 'ok') throw new Error(`${file}: not a spool file of this version`);
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw err;
  }
  return fh;
}

async function closeQuietly(fh: Promise<FileHandle>): Promise<void> {
  try {
    await (await fh).close();
  } catch {
    // never opened, or already closed
  }
}

/** Removes tmp/ files (half-written large messages) older than `olderThanMs`. The age test keeps
 *  it safe while other writers are running; returns how many were removed. */
export async function removeStaleTmp(dir: string, options: { olderThanMs: number; nowMs: number }): Promise<number> {
  const tmpDir = path.join(dir, TMP_DIR);
  let removed = 0;
  for (const name of await listFiles(tmpDir, /^[A-Za-z0-9_.-]+$/)) {
    const file = path.join(tmpDir, name);
    try {
      const info = await stat(file);
      if (!info.isFile() || options.nowMs - info.mtimeMs < options.olderThanMs) continue;
      await unlink(file);
      removed++;
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
  }
  return removed;
}

type RecordItem = { offset: number; envelope: Envelope; body: Buffer } | { damage: SpoolDamage };

/** Walks a whole spool file from its header, record by record. */
function* recordsIn(buf: Buffer, file: string): Generator<RecordItem> {
  const header = checkFileHeader(buf);
  if (header.kind !== 'ok') {
    yield { damage: { file, offset: 0, kind: header.kind, reason: 'file header' } };
    return;
  }
  yield* recordsFrom(buf, FILE_HEADER.length, 0, file);
}

/** Walks records in `buf` from `start`, a record boundary; `base` is the file offset of buf[0]. */
function* recordsFrom(buf: Buffer, start: number, base: number, file: string): Generator<RecordItem> {
  let offset = start;
  for (;;) {
    const decoded = decodeRecord(buf, offset);
    switch (decoded.kind) {
      case 'end':
        return;
      case 'torn':
        // Security: no resynchronising by searching for the magic; the rest is unreadable.
        yield { damage: { file, offset: base + offset, kind: 'torn', reason: decoded.reason } };
        return;
      case 'corrupt': {
        // A bad last record is what an interrupted write usually leaves (the file grew, the
        // bytes did not all land): call it torn. Followed by good records, it is real damage.
        const after = decodeRecord(buf, decoded.end);
        const isLast = after.kind === 'end' || after.kind === 'torn';
        yield { damage: { file, offset: base + offset, kind: isLast ? 'torn' : 'corrupt', reason: decoded.reason } };
        if (isLast) return;
        offset = decoded.end;
        break;
      }
      case 'record':
        yield { offset: base + offset, envelope: decoded.envelope, body: decoded.body };
        offset = decoded.end;
        break;
    }
  }
}

async function readAt(
  dir: string,
  queueId: string,
  location: string,
): Promise<{ envelope: Envelope; content: Buffer } | null> {
  const match = LOCATION.exec(location);
  if (match === null) return null;
  const offset = Number(match[2]);
  if (offset < FILE_HEADER.length) return null;
  // Security: a message file serves only the id in its name (as in scanSpool).
  if (match[1].startsWith(`${MESSAGES_DIR}/`) && match[1] !== `${MESSAGES_DIR}/${queueId}.msg`) return null;
  let fh: FileHandle;
  try {
    fh = await open(path.join(dir, match[1]), 'r');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
  try {
    const head = Buffer.alloc(FILE_HEADER.length);
    await readExactly(fh, head, 0);
    if (checkFileHeader(head).kind !== 'ok') return null;
    const recordHeader = Buffer.alloc(RECORD_HEADER_BYTES);
    if (!(await readExactly(fh, recordHeader, offset))) return null;
    // Lengths are trusted (and memory allocated) only once the header's own CRC checks out.
    const lengths = decodeRecordHeader(recordHeader, 0);
    if ('problem' in lengths) return null;
    const total = lengths.recordBytes;
    const { size } = await fh.stat();
    if (offset + total > size) return null;
    const buf = Buffer.allocUnsafe(total);
    if (!(await readExactly(fh, buf, offset))) return null;
    const decoded = decodeRecord(buf, 0);
    if (decoded.kind !== 'record' || decoded.end !== total) return null;
    if (decoded.envelope.queueId !== queueId) return null;
    return { envelope: decoded.envelope, content: decoded.body };
  } finally {
    await fh.close();
  }
}

async function readExactly(fh: FileHandle, buf: Buffer, position: number): Promise<boolean> {
  let filled = 0;
  while (filled < buf.length) {
    const { bytesRead } = await fh.read(buf, filled, buf.length - filled, position + filled);
    if (bytesRead === 0) return false;
    filled += bytesRead;
  }
  return true;
}

async function listFiles(dir: string, pattern: RegExp): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return [];
    throw err;
  }
  return names.filter((name) => pattern.test(name)).sort();
}

async function readIfPresent(file: string): Promise<Buffer | null> {
  try {
    return await readFile(file);
  } catch (err) {
    // Removed between listing and reading (the queue finished with it): not damage.
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}
