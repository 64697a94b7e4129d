// Owns the read side of the spool: recovery scans, listing, reading one message back, and
// removing stale tmp/ files. Never writes to segments or messages/; never returns a record whose
// checksum fails, and never looks for records anywhere but at boundaries reached from a file's
// start (see decodeRecord).

import { open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import {
  checkFileHeader,
  decodeRecord,
  decodeRecordHeader,
  FILE_HEADER,
  formatLocation,
  isValidQueueId,
  MESSAGES_DIR,
  RECORD_HEADER_BYTES,
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
  let offset = FILE_HEADER.length;
  for (;;) {
    const decoded = decodeRecord(buf, offset);
    switch (decoded.kind) {
      case 'end':
        return;
      case 'torn':
        // Security: no resynchronising by searching for the magic; the rest is unreadable.
        yield { damage: { file, offset, kind: 'torn', reason: decoded.reason } };
        return;
      case 'corrupt': {
        // A bad last record is what an interrupted write usually leaves (the file grew, the
        // bytes did not all land): call it torn. Followed by good records, it is real damage.
        const after = decodeRecord(buf, decoded.end);
        const isLast = after.kind === 'end' || after.kind === 'torn';
        yield { damage: { file, offset, kind: isLast ? 'torn' : 'corrupt', reason: decoded.reason } };
        if (isLast) return;
        offset = decoded.end;
        break;
      }
      case 'record':
        yield { offset, envelope: decoded.envelope, body: decoded.body };
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
