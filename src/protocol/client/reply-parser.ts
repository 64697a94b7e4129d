// Incremental parser of the replies an SMTP or LMTP server sends us: bytes in, whole replies out.
// Never buffers more than one line's cap, never re-reads a byte it has scanned, never throws on
// a peer's bytes: a malformed or over-long reply is a protocol error value, after which the
// parser is dead (the shell closes the connection; the transaction is deferred).
// RFC 5321 4.2 (reply lines, multi-line replies), 4.5.3.1.5 (reply line length),
// RFC 2034 / RFC 3463 (enhanced status codes).
//
// Hand-written because it is 150 lines and must hold two caps a generic line reader does not:
// Security: a line over MAX_REPLY_LINE_OCTETS or a reply over MAX_REPLY_LINES is refused while
// scanning, so a peer sending a 10 MB line costs us 2 KiB of buffer, never 10 MB.

import type { Reply } from '../replies.ts';

/** RFC 5321 4.5.3.1.5 says 512 octets including CRLF; real servers exceed it a little (long
 *  EHLO keywords, verbose 5xx texts), so we allow four times that before calling it abuse. */
export const MAX_REPLY_LINE_OCTETS = 2048;
/** No real reply has more lines than a long EHLO list (~30); 100 bounds a hostile one. */
export const MAX_REPLY_LINES = 100;

const LF = 0x0a;
const CR = 0x0d;

export type ReplyEvent = { type: 'reply'; reply: Reply } | { type: 'protocol-error'; reason: string };

const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)/;

/**
 * Splits the byte stream into replies. Lines end at LF (a preceding CR is dropped): being
 * lenient about a server's bare LF has no smuggling risk in this direction, and real servers
 * (and test tools) sometimes send it.
 */
export class ReplyParser {
  /** Bytes of the current, unfinished line (at most MAX_REPLY_LINE_OCTETS + 1). */
  #partial: Buffer[] = [];
  #partialBytes = 0;
  /** Lines of the current multi-line reply (code and separator removed). */
  #lines: string[] = [];
  #code = 0;
  #isDead = false;

  get isDead(): boolean {
    return this.#isDead;
  }

  /** True while a reply has started (at least one `250-` line or part of a line seen). */
  get isMidReply(): boolean {
    return this.#lines.length > 0 || this.#partialBytes > 0;
  }

  push(chunk: Buffer): ReplyEvent[] {
    const events: ReplyEvent[] = [];
    if (this.#isDead) return events;
    let from = 0;
    while (from < chunk.length) {
      const lf = chunk.indexOf(LF, from);
      const end = lf === -1 ? chunk.length : lf;
      const pieceBytes = end - from;
      // Security: checked before the piece is kept, so the buffer never exceeds the cap.
      if (this.#partialBytes + pieceBytes > MAX_REPLY_LINE_OCTETS + 1) {
        return this.#die(events, `reply line longer than ${MAX_REPLY_LINE_OCTETS} octets`);
      }
      if (lf === -1) {
        // Copied: the caller may reuse its buffer, and a view would pin a large read.
        this.#partial.push(Buffer.from(chunk.subarray(from, end)));
        this.#partialBytes += pieceBytes;
        break;
      }
      let line = this.#partialBytes === 0 ? chunk.subarray(from, end) : Buffer.concat([...this.#partial, chunk.subarray(from, end)]);
      this.#partial = [];
      this.#partialBytes = 0;
      from = lf + 1;
      if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
      if (line.length > MAX_REPLY_LINE_OCTETS) return this.#die(events, `reply line longer than ${MAX_REPLY_LINE_OCTETS} octets`);
      const err = this.#line(line, events);
      if (err !== null) return this.#die(events, err);
    }
    return events;
  }

  /** The connection ended: a reply cut in the middle is a protocol error. */
  end(): ReplyEvent[] {
    if (this.#isDead || !this.isMidReply) return [];
    return this.#die([], 'connection closed in the middle of a reply');
  }

  #die(events: ReplyEvent[], reason: string): ReplyEvent[] {
    this.#isDead = true;
    this.#partial = [];
    this.#partialBytes = 0;
    this.#lines = [];
    events.push({ type: 'protocol-error', reason });
    return events;
  }

  #line(line: Buffer, events: ReplyEvent[]): string | null {
    // RFC 5321 4.2: Reply-code [ ("-" / SP) textstring ]; code 2-5, 0-5, 0-9.
    if (line.length < 3) return 'reply line shorter than a reply code';
    const d0 = line[0] - 0x30;
    const d1 = line[1] - 0x30;
    const d2 = line[2] - 0x30;
    if (d0 < 2 || d0 > 5 || d1 < 0 || d1 > 5 || d2 < 0 || d2 > 9) return 'reply line without a valid reply code';
    const code = d0 * 100 + d1 * 10 + d2;
    const sep = line.length > 3 ? line[3] : 0x20;
    if (sep !== 0x2d && sep !== 0x20) return 'reply code not followed by "-" or a space';
    if (this.#lines.length > 0 && code !== this.#code) return 'multi-line reply changes its code';
    if (this.#lines.length >= MAX_REPLY_LINES) return `reply longer than ${MAX_REPLY_LINES} lines`;
    this.#code = code;
    this.#lines.push(line.toString('utf8', Math.min(4, line.length)));
    if (sep === 0x2d) return null;
    events.push({ type: 'reply', reply: withEnhanced(code, this.#lines) });
    this.#lines = [];
    return null;
  }
}

/** RFC 2034 3: every line of a reply carries the enhanced code; it is taken from the first line
 *  and stripped from every line that repeats it. Its class must match the reply's. */
function withEnhanced(code: number, lines: string[]): Reply {
  const m = ENHANCED.exec(lines[0]);
  if (m === null || Number(m[1]) !== Math.floor(code / 100)) return { code, enhanced: null, lines };
  const enhanced = `${m[1]}.${Number(m[2])}.${Number(m[3])}`;
  const stripped = lines.map((l) => {
    const e = ENHANCED.exec(l);
    return e === null ? l : l.slice(e[0].length);
  });
  return { code, enhanced, lines: stripped };
}
