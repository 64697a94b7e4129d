// Owns the spool's byte layout: the file header every spool file starts with, and the record
// frame (encode, decode, checksums) shared by the writer (journal.ts) and the reader (reader.ts).
// Never touches the file system; never trusts a length or an envelope that no checksum covers.

import { crc32 } from 'node:zlib';
import type { Envelope } from './types.ts';

/** Every segment and every large-message file starts with these bytes. The version is in the
 *  name so that a reader meeting a newer format skips the file instead of misreading it. */
export const FILE_HEADER = Buffer.from('PORTCULLIS-SPOOL 1\n', 'latin1');

/** "PCR1" read as a big-endian u32: the first bytes of every record. */
export const RECORD_MAGIC = 0x50_43_52_31;

/** magic u32 | envelopeBytes u32 | bodyBytes u32 | headerCrc u32, all big-endian. */
export const RECORD_HEADER_BYTES = 16;

/** The CRC32 over header, envelope and body that ends every record. */
export const RECORD_TRAILER_BYTES = 4;

export const RECORD_OVERHEAD_BYTES = RECORD_HEADER_BYTES + RECORD_TRAILER_BYTES;

/** An envelope holds at most a few hundred recipients; anything near this is a bug. */
export const MAX_ENVELOPE_BYTES = 16 * 1024 * 1024;

/** fs.readFile refuses files over 2 GiB, and the reader reads whole files; a 1 GiB cap keeps a
 *  large message (plus framing) readable. */
export const MAX_BODY_BYTES = 1024 * 1024 * 1024;

/**
 * The largest `smtp.max_message_bytes` (the configuration's validator uses it): a client's message
 * of that size plus the header fields the server adds above it (Received, the policy checks'
 * results: a few KiB) still fits in MAX_BODY_BYTES, so a message SIZE allows is never refused
 * by the spool with a 451 that the client would retry forever.
 */
export const MAX_MESSAGE_BYTES = MAX_BODY_BYTES - 1024 * 1024;

/**
 * The largest `spool.segment_max_bytes` (the configuration's validator uses it). The reader reads a
 * segment whole with fs.readFile, which refuses files over 2 GiB (ERR_FS_FILE_TOO_LARGE); a segment
 * grows past its limit by at most one record (at most spool.journal_max_message_bytes, 64 MiB,
 * plus its envelope, MAX_ENVELOPE_BYTES), so 1 GiB stays readable with room to spare.
 */
export const MAX_SEGMENT_BYTES = 1024 * 1024 * 1024;

/** The spool directory's layout: journal segments, one file per large message, and scratch
 *  space for large messages being written (never read by recovery). */
export const SEGMENTS_DIR = 'segments';
export const MESSAGES_DIR = 'messages';
export const TMP_DIR = 'tmp';

/** Where a record is: `<segments|messages>/<file>@<byte offset of the record>` (reader.ts parses it). */
export function formatLocation(dir: typeof SEGMENTS_DIR | typeof MESSAGES_DIR, file: string, offset: number): string {
  return `${dir}/${file}@${offset}`;
}

/** Queue ids become file names (tmp/<id>, messages/<id>.msg). */
const QUEUE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export type SpoolErrorCode =
  /** The writer was closed before the commit started. */
  | 'SPOOL_CLOSED'
  /** The caller handed over something the spool refuses to store (our bug, not the peer's). */
  | 'SPOOL_BAD_MESSAGE'
  /** A write or fsync failed; nothing of this commit is left for recovery to find. */
  | 'SPOOL_WRITE_FAILED'
  /** A failed write could not be undone; the writer refuses every later commit. */
  | 'SPOOL_UNSAFE';

export class SpoolError extends Error {
  readonly code: SpoolErrorCode;

  constructor(code: SpoolErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SpoolError';
    this.code = code;
  }
}

export function isValidQueueId(queueId: unknown): queueId is string {
  return typeof queueId === 'string' && QUEUE_ID_PATTERN.test(queueId);
}

export type EncodedRecord = {
  /** header, envelope JSON, the caller's body buffers as they are (not copied), trailer. */
  chunks: Buffer[];
  bytes: number;
};

/** Frames one message. Throws SpoolError('SPOOL_BAD_MESSAGE') on input the reader would refuse,
 *  so that nothing is ever acknowledged that recovery would later drop. */
export function encodeRecord(envelope: Envelope, body: readonly Buffer[]): EncodedRecord {
  let bodyBytes = 0;
  for (const chunk of body) bodyBytes += chunk.length;
  const start = encodeRecordStart(envelope, bodyBytes);
  let crc = start.crc;
  for (const chunk of body) crc = crc32(chunk, crc);
  const chunks: Buffer[] = [start.header, start.envelopeJson];
  for (const chunk of body) if (chunk.length > 0) chunks.push(chunk);
  chunks.push(recordTrailer(crc));
  return { chunks, bytes: RECORD_OVERHEAD_BYTES + start.envelopeJson.length + bodyBytes };
}

/**
 * A record's header and envelope for a body of `bodyBytes` octets, and the CRC so far: the caller
 * runs crc32 over the body, in order, and ends the record with recordTrailer(crc). For bodies
 * copied from a file without holding them (a message larger than a session keeps in memory).
 */
export function encodeRecordStart(envelope: Envelope, bodyBytes: number): { header: Buffer; envelopeJson: Buffer; crc: number } {
  if (envelope.version !== 1) {
    throw new SpoolError('SPOOL_BAD_MESSAGE', `unsupported envelope version ${String(envelope.version)}`);
  }
  // Security: the queue id names files; only a plain token may reach path.join.
  if (!isValidQueueId(envelope.queueId)) {
    throw new SpoolError('SPOOL_BAD_MESSAGE', 'queue id is not a plain token');
  }
  if (bodyBytes > MAX_BODY_BYTES) {
    throw new SpoolError('SPOOL_BAD_MESSAGE', `body of ${bodyBytes} bytes exceeds the spool's limit`);
  }
  if (envelope.size !== bodyBytes) {
    throw new SpoolError('SPOOL_BAD_MESSAGE', `envelope size ${String(envelope.size)} differs from the ${bodyBytes} body bytes`);
  }
  const envelopeJson = Buffer.from(JSON.stringify(envelope), 'utf8');
  if (envelopeJson.length > MAX_ENVELOPE_BYTES) {
    throw new SpoolError('SPOOL_BAD_MESSAGE', 'envelope too large');
  }
  const header = Buffer.allocUnsafe(RECORD_HEADER_BYTES);
  header.writeUInt32BE(RECORD_MAGIC, 0);
  header.writeUInt32BE(envelopeJson.length, 4);
  header.writeUInt32BE(bodyBytes, 8);
  // The header has its own CRC so that a reader can trust the lengths (and skip exactly one
  // record) when only the payload is damaged.
  header.writeUInt32BE(crc32(header.subarray(0, 12)), 12);
  return { header, envelopeJson, crc: crc32(envelopeJson, crc32(header)) };
}

export function recordTrailer(crc: number): Buffer {
  const trailer = Buffer.allocUnsafe(RECORD_TRAILER_BYTES);
  trailer.writeUInt32BE(crc, 0);
  return trailer;
}

export type FileHeaderCheck =
  | { kind: 'ok' }
  /** Shorter than the header and a prefix of it: a file whose creation a crash interrupted. */
  | { kind: 'torn' }
  /** Another format or version: not ours to read. */
  | { kind: 'foreign' };

export function checkFileHeader(buf: Buffer): FileHeaderCheck {
  if (buf.length < FILE_HEADER.length) {
    return FILE_HEADER.subarray(0, buf.length).equals(buf) ? { kind: 'torn' } : { kind: 'foreign' };
  }
  return buf.subarray(0, FILE_HEADER.length).equals(FILE_HEADER) ? { kind: 'ok' } : { kind: 'foreign' };
}

export type DecodedRecord =
  | { kind: 'record'; envelope: Envelope; body: Buffer; end: number }
  /** The frame is intact (header CRC good, all bytes present) but the content is not: skip it
   *  and continue at `end`. */
  | { kind: 'corrupt'; reason: string; end: number }
  /** No trustworthy frame starts here: the rest of the buffer cannot be read. After a crash this
   *  is the half-written tail of the last batch. */
  | { kind: 'torn'; reason: string }
  | { kind: 'end' };

/** Decodes the record starting at `offset`. `body` is a view into `buf`, not a copy.
 *  Security: `offset` must be a record boundary reached by following lengths from the file
 *  header. A body may hold bytes that look like a well-formed record (anyone can compute a
 *  CRC32), so a reader must never search for the magic inside data to resynchronise. */
export function decodeRecord(buf: Buffer, offset: number): DecodedRecord {
  if (buf.length === offset) return { kind: 'end' };
  const header = decodeRecordHeader(buf, offset);
  if ('problem' in header) return { kind: 'torn', reason: header.problem };
  const { envelopeBytes, bodyBytes } = header;
  const envelopeStart = offset + RECORD_HEADER_BYTES;
  const bodyStart = envelopeStart + envelopeBytes;
  const trailerStart = bodyStart + bodyBytes;
  const end = trailerStart + RECORD_TRAILER_BYTES;
  if (end > buf.length) return { kind: 'torn', reason: 'record cut short' };

  if (crc32(buf.subarray(offset, trailerStart)) !== buf.readUInt32BE(trailerStart)) {
    return { kind: 'corrupt', reason: 'record checksum mismatch', end };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(buf.toString('utf8', envelopeStart, bodyStart));
  } catch {
    return { kind: 'corrupt', reason: 'envelope is not JSON', end };
  }
  const problem = envelopeProblem(parsed, bodyBytes);
  if (problem !== null) return { kind: 'corrupt', reason: problem, end };
  return { kind: 'record', envelope: parsed as Envelope, body: buf.subarray(bodyStart, trailerStart), end };
}

/** The lengths from a record header, once magic, header CRC and bounds check out. */
export function decodeRecordHeader(
  buf: Buffer,
  offset: number,
): { envelopeBytes: number; bodyBytes: number; recordBytes: number } | { problem: string } {
  if (buf.length - offset < RECORD_HEADER_BYTES) return { problem: 'short record header' };
  if (buf.readUInt32BE(offset) !== RECORD_MAGIC) return { problem: 'no record magic' };
  if (crc32(buf.subarray(offset, offset + 12)) !== buf.readUInt32BE(offset + 12)) {
    return { problem: 'record header checksum mismatch' };
  }
  const envelopeBytes = buf.readUInt32BE(offset + 4);
  const bodyBytes = buf.readUInt32BE(offset + 8);
  if (envelopeBytes > MAX_ENVELOPE_BYTES || bodyBytes > MAX_BODY_BYTES) {
    return { problem: 'implausible record lengths' };
  }
  return { envelopeBytes, bodyBytes, recordBytes: RECORD_OVERHEAD_BYTES + envelopeBytes + bodyBytes };
}

/** The writer is the only author and the CRC rules out media damage, so this checks only what
 *  the reader's callers rely on blindly: the version, the id that names files, the size. */
function envelopeProblem(value: unknown, bodyBytes: number): string | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'envelope is not an object';
  const envelope = value as Partial<Record<keyof Envelope, unknown>>;
  if (envelope.version !== 1) return 'unknown envelope version';
  if (!isValidQueueId(envelope.queueId)) return 'queue id is not a plain token';
  if (!Array.isArray(envelope.recipients)) return 'recipients missing';
  if (envelope.size !== bodyBytes) return 'envelope size differs from body length';
  return null;
}
