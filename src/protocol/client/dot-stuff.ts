// The outbound content encoder: stored message bytes in, wire bytes out, streaming, in one pass.
// Never passes on a bare CR or a bare LF and never lets a content line end the data early.
// RFC 5321 2.3.8 (CRLF only), 4.5.2 (transparency: a line starting with "." gets one more),
// 4.1.1.4 (<CRLF>.<CRLF> ends the data); RFC 3030 (BDAT: no stuffing, same line ends).
//
// Security: this is the sending half of the SMTP smuggling defence. Whatever the stored bytes are
// (a message accepted in bare_line_endings = "normalize" mode, a body file from an older build),
// each CR, LF and CRLF becomes exactly one CRLF, so no next hop can see a line end we did not
// mean, and a line of only "." goes out as "..", so only our own terminator ends the data.

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CRLF = Buffer.from('\r\n');
const DOT_BYTE = Buffer.from('.');
const END_DATA = Buffer.from('.\r\n');

export type StuffMode = 'data' | 'bdat';

export class WireEncoder {
  readonly #isStuffing: boolean;
  #isLineStart = true;
  /** The previous chunk ended in CR: an LF at the start of this one belongs to it. */
  #isAfterCr = false;
  #octetsOut = 0;

  constructor(mode: StuffMode) {
    this.#isStuffing = mode === 'data';
  }

  /** Wire octets emitted so far (the BDAT sizes and the log use it). */
  get octetsOut(): number {
    return this.#octetsOut;
  }

  push(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    let i = 0;
    const n = chunk.length;
    if (this.#isAfterCr && n > 0) {
      this.#isAfterCr = false;
      if (chunk[0] === LF) i = 1;
    }
    // Next CR and LF positions, each searched once per occurrence (no rescans).
    let nextCr = chunk.indexOf(CR, i);
    let nextLf = chunk.indexOf(LF, i);
    while (i < n) {
      if (this.#isStuffing && this.#isLineStart && chunk[i] === DOT) out.push(DOT_BYTE);
      if (nextCr !== -1 && nextCr < i) nextCr = chunk.indexOf(CR, i);
      if (nextLf !== -1 && nextLf < i) nextLf = chunk.indexOf(LF, i);
      const eol = nextCr === -1 ? nextLf : nextLf === -1 ? nextCr : Math.min(nextCr, nextLf);
      if (eol === -1) {
        out.push(chunk.subarray(i));
        this.#isLineStart = false;
        break;
      }
      if (eol > i) out.push(chunk.subarray(i, eol));
      out.push(CRLF);
      this.#isLineStart = true;
      if (chunk[eol] === CR) {
        if (eol + 1 < n) i = chunk[eol + 1] === LF ? eol + 2 : eol + 1;
        else {
          this.#isAfterCr = true;
          i = eol + 1;
        }
      } else i = eol + 1;
    }
    const buf = out.length === 1 ? out[0] : Buffer.concat(out);
    this.#octetsOut += buf.length;
    return buf;
  }

  /** The tail: a CRLF if the content did not end with a line end (the wire needs one), then, in
   *  DATA mode, the terminating ".CRLF" (RFC 5321 4.1.1.4). */
  end(): Buffer {
    const parts: Buffer[] = [];
    if (!this.#isLineStart) parts.push(CRLF);
    if (this.#isStuffing) parts.push(END_DATA);
    this.#isLineStart = true;
    this.#isAfterCr = false;
    const buf = Buffer.concat(parts);
    this.#octetsOut += buf.length;
    return buf;
  }
}

/** Wire form of a whole message, for tests and small contents. */
export function encodeForWire(content: Buffer, mode: StuffMode): Buffer {
  const e = new WireEncoder(mode);
  return Buffer.concat([e.push(content), e.end()]);
}
