// A client of clamd's INSTREAM command: one connection per scan (TCP or a UNIX socket), the
// message sent as length-prefixed chunks ("zINSTREAM\0", then per chunk a 4-byte big-endian
// length and the octets, then a zero length), and the one NUL-terminated reply read back.
// Bounded everywhere: a connect timeout, a command timeout (re-armed while the socket takes our
// chunks, then the wait for the verdict), a reply of at most MAX_REPLY_BYTES, and clamd's own
// StreamMaxLength mirrored by `maxStreamBytes` so an oversized message is answered before any
// byte is sent. Every outcome is a value (clean, virus, too-large, error with a stable code);
// never throws, never leaves a socket open (the socket's part is exchange.ts).
//
// Why no npm library (clamscan and the like): the protocol is a dozen lines, those libraries add
// file scanning, binary fallbacks and their own retries we do not want, and none keeps "over the
// stream limit" apart from "clean". Reply parsing is pure (parseClamdReply, ClamdReplyReader) and
// fuzzed: any split of the reply's bytes reads the same, garbage never throws.

import type { Endpoint } from '../net/endpoint.ts';
import { exchange, type ExchangeErrorCode, type Write } from './exchange.ts';

/** clamd's StreamMaxLength default (25 MiB): an operator who raises it there raises ours too. */
export const CLAMD_DEFAULT_STREAM_MAX_BYTES = 25 * 1024 * 1024;
/** The longest reply we read: "stream: <signature> FOUND" is well under 1 KiB. */
export const MAX_REPLY_BYTES = 4096;
/** Largest chunk sent in one length prefix (clamd reads any size up to its StreamMaxLength). */
const MAX_CHUNK_BYTES = 64 * 1024;

export type ClamdErrorCode = ExchangeErrorCode | 'protocol' | 'scanner';

export type ClamdResult =
  | { readonly kind: 'clean' }
  | { readonly kind: 'virus'; readonly signature: string }
  /** Over our stream_max_bytes, or clamd said "INSTREAM size limit exceeded". */
  | { readonly kind: 'too-large'; readonly reason: string }
  | { readonly kind: 'error'; readonly code: ClamdErrorCode; readonly reason: string };

export type ClamdOptions = {
  readonly address: Endpoint;
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
  readonly maxStreamBytes: number;
};

/** A printable, bounded form of a peer's text for a log line. */
function printable(text: string): string {
  const flat = text.replace(/[^\x20-\x7e]/g, '?');
  return flat.length > 200 ? `${flat.slice(0, 200)}…` : flat;
}

/**
 * One reply of clamd, without its NUL. "stream: OK", "stream: <name> FOUND", "<text> ERROR"
 * ("INSTREAM size limit exceeded. ERROR" is the stream limit); anything else is garbage.
 */
export function parseClamdReply(reply: Buffer): ClamdResult {
  const text = reply.toString('latin1').replace(/\n$/, '');
  if (text === 'stream: OK') return { kind: 'clean' };
  const found = /^stream: (.+) FOUND$/s.exec(text);
  if (found !== null) {
    const signature = found[1]!;
    // A signature name is printable ASCII; anything else is not clamd talking.
    if (/^[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?$/.test(signature)) return { kind: 'virus', signature };
    return { kind: 'error', code: 'protocol', reason: `unreadable signature name in "${printable(text)}"` };
  }
  if (/INSTREAM size limit exceeded/i.test(text)) return { kind: 'too-large', reason: `clamd: ${printable(text)}` };
  if (/ ERROR$/.test(text)) return { kind: 'error', code: 'scanner', reason: `clamd: ${printable(text)}` };
  return { kind: 'error', code: 'protocol', reason: `not a clamd reply: "${printable(text)}"` };
}

/** Collects the reply's bytes, however they are split, up to its NUL (or the connection's end). */
export class ClamdReplyReader {
  #parts: Buffer[] = [];
  #bytes = 0;
  #result: ClamdResult | null = null;

  /** The reply once it is complete (NUL seen, or too long: garbage); null while more may come. */
  push(bytes: Buffer): ClamdResult | null {
    if (this.#result !== null) return this.#result;
    const nul = bytes.indexOf(0);
    const part = nul >= 0 ? bytes.subarray(0, nul) : bytes;
    this.#parts.push(part);
    this.#bytes += part.length;
    if (this.#bytes > MAX_REPLY_BYTES) return (this.#result = { kind: 'error', code: 'protocol', reason: `reply longer than ${MAX_REPLY_BYTES} bytes` });
    if (nul >= 0) this.#result = parseClamdReply(Buffer.concat(this.#parts));
    return this.#result;
  }

  /** The connection ended: the reply so far (clamd may close after its last line without a NUL), or null for none. */
  end(): ClamdResult | null {
    if (this.#result !== null) return this.#result;
    if (this.#bytes === 0) return null;
    return (this.#result = parseClamdReply(Buffer.concat(this.#parts)));
  }
}

const COMMAND = Buffer.from('zINSTREAM\0', 'latin1');
const END = Buffer.alloc(4);

/**
 * Scans `bytes` octets from `chunks` with clamd. `signal` (the pipeline's budget) ends the scan
 * early as a timeout. Always resolves.
 */
export async function clamdScan(opts: ClamdOptions, message: { bytes: number; chunks(): AsyncIterable<Buffer> }, signal?: AbortSignal): Promise<ClamdResult> {
  // Security: over the limit clamd would stop reading and answer an error; a message it cannot
  // see whole must never count as clean, so it is answered here, before any byte is sent.
  if (message.bytes > opts.maxStreamBytes) return { kind: 'too-large', reason: `message of ${message.bytes} bytes is over clamd.stream_max_bytes (${opts.maxStreamBytes})` };
  const send = async (write: Write): Promise<ClamdResult | undefined> => {
    if (!(await write(COMMAND))) return undefined;
    let sent = 0;
    for await (const chunk of message.chunks()) {
      for (let at = 0; at < chunk.length; at += MAX_CHUNK_BYTES) {
        const piece = chunk.subarray(at, Math.min(chunk.length, at + MAX_CHUNK_BYTES));
        sent += piece.length;
        if (sent > opts.maxStreamBytes) return { kind: 'too-large', reason: `message is over clamd.stream_max_bytes (${opts.maxStreamBytes})` };
        const len = Buffer.allocUnsafe(4);
        len.writeUInt32BE(piece.length);
        if (!(await write(len)) || !(await write(piece))) return undefined;
      }
    }
    await write(END);
    return undefined;
  };
  // A reset while we still send is usually clamd's StreamMaxLength (its reply can be lost with
  // the reset), else clamd went away. Either way not clean.
  return exchange({ ...opts, name: 'clamd' }, send, new ClamdReplyReader(), signal, 'while the message was being sent (is clamd\'s StreamMaxLength below clamd.stream_max_bytes?)');
}
