// Framing: the only code that decides where a command line, a DATA body or a BDAT chunk ends.
// Never interprets commands, never re-reads a byte it has scanned, never buffers past a cap.
// RFC 5321 2.3.8 and 4.1.1.4 (CRLF only; <CRLF>.<CRLF> ends data; dot-stuffing 4.5.2),
// RFC 3030 (BDAT chunks are exactly N octets, no stuffing).
//
// Security: the SMTP smuggling class (2023) exists because receivers disagreed about what ends
// the data. Here only CR LF "." CR LF ends DATA; a bare CR, bare LF or NUL never ends a line, a
// command or the data, and is recorded as a defect so the message can be refused (or, where the
// operator chose it, normalised to CRLF) after the real end of data.

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const NUL = 0x00;
const CRLF = Buffer.from('\r\n');
const LF_ONLY = Buffer.from('\n');
const EMPTY = Buffer.alloc(0);

/** Index of `byte` in buf[from, end), or end. */
function nextIndex(buf: Buffer, byte: number, from: number, end: number): number {
  // Search only [from, end): for small BDAT chunks in a large read, searching to the end of the
  // buffer each time would cost O(read size) per chunk.
  const at = (end === buf.length ? buf : buf.subarray(0, end)).indexOf(byte, from);
  return at === -1 ? end : at;
}

/** Runs shorter than this are copied into a shared block instead of kept as views, so a body of
 *  tiny pieces (dot-stuffed short lines, 1-octet BDAT chunks) cannot cost a view per few octets. */
const MIN_VIEW_BYTES = 4096;
const BLOCK_BYTES = 65536;

export type LineDefect = 'bare-cr' | 'bare-lf' | 'nul';

export type ContentDefects = {
  bareCr: boolean;
  bareLf: boolean;
  nul: boolean;
  /** A text line (CRLF included) longer than the limit. */
  longLine: boolean;
  /** More content octets than the size limit; content past the limit was not kept. */
  tooBig: boolean;
  /** The header section did not end within what a session may hold in memory. */
  headerTooBig: boolean;
  /** More Received fields than RFC 5321 6.3's hop limit: a mail loop (message/hops.ts). */
  tooManyHops: boolean;
};

export type Frame =
  | { type: 'line'; line: Buffer }
  | { type: 'bad-line'; defect: LineDefect }
  | { type: 'line-too-long' }
  | { type: 'data-end' }
  | { type: 'bdat-end' };

const L_SCAN = 0; // scanning a command line
const L_DISCARD = 1; // over-long line: dropping octets up to the next line end

// Content scanner states.
const S_LINE_START = 0;
const S_MID = 1;
const S_CR = 2; // previous octet was a CR inside a line (already kept as content)
const S_DOT = 3; // "." at the start of a DATA line, not kept yet
const S_DOT_CR = 4; // "." CR at the start of a DATA line, neither kept yet

export type ContentOptions = {
  /** DATA: dot-stuffed and ended by CRLF.CRLF. BDAT: raw octets. */
  isDotStuffed: boolean;
  /** Keep at most this many content octets; the rest is scanned and dropped. */
  maxBytes: number;
  /** RFC 5321 4.5.3.1.6: text line limit including CRLF. */
  maxLineBytes: number;
  /** Normalise bare CR / bare LF to CRLF and drop NUL instead of refusing. */
  isNormalizing: boolean;
};

/**
 * Turns wire octets of one message body into canonical content: CRLF lines, dot-unstuffed.
 * Keeps views of the input buffers (no copy) and stops keeping anything once the message is
 * known to be refused, so a refused body costs no memory.
 */
export class ContentScanner {
  readonly #chunks: Buffer[] = [];
  /** The block short runs are copied into, and how much of it is used. */
  #block: Buffer | null = null;
  #blockUsed = 0;
  #blockStart = 0;
  /** Content octets seen (kept or not), so the size check sees the real size. */
  size = 0;
  readonly defects: ContentDefects = { bareCr: false, bareLf: false, nul: false, longLine: false, tooBig: false, headerTooBig: false, tooManyHops: false };
  /** Content octets handed over by takeChunks (written elsewhere). */
  #takenBytes = 0;
  #state: number;
  #lineBytes = 0;
  #isKeeping = true;
  readonly #opts: ContentOptions;

  constructor(opts: ContentOptions) {
    this.#opts = opts;
    this.#state = opts.isDotStuffed ? S_LINE_START : S_MID;
  }

  get isRefused(): boolean {
    const d = this.defects;
    return d.tooBig || d.longLine || d.headerTooBig || d.tooManyHops || (!this.#opts.isNormalizing && (d.bareCr || d.bareLf || d.nul));
  }

  /** Kept content octets still held here (not yet taken). */
  get heldBytes(): number {
    return this.#isKeeping ? this.size - this.#takenBytes : 0;
  }

  /** Hands over the content kept so far (the caller writes it to the body file); keeping goes on. */
  takeChunks(): Buffer[] {
    this.#sealBlock();
    const out = this.#chunks.splice(0);
    for (const c of out) this.#takenBytes += c.length;
    return out;
  }

  /** Puts back what takeChunks handed over (nothing was kept in between): the caller did not use it. */
  giveBack(chunks: Buffer[]): void {
    for (const c of chunks) this.#takenBytes -= c.length;
    this.#chunks.unshift(...chunks);
  }

  /** The header section is larger than a session may hold: the message is refused at its end. */
  refuseHeader(): void {
    this.defects.headerTooBig = true;
    this.#count(0);
  }

  /** The header section holds more Received fields than the hop limit: refused at its end. */
  refuseHops(): void {
    this.defects.tooManyHops = true;
  }

  /** The kept content (canonical, unstuffed) as a list of buffers. */
  get chunks(): Buffer[] {
    this.#sealBlock();
    return this.#chunks;
  }

  /** Kept content octets (what will be stored). */
  get keptBytes(): number {
    let n = 0;
    for (const c of this.chunks) n += c.length;
    return n;
  }

  /**
   * Scans buf[start, end). For DATA, returns the index just past the terminating CRLF.CRLF, or -1
   * when the end is not in this range. For BDAT, always scans the whole range and returns -1.
   */
  scan(buf: Buffer, start: number, end: number): number {
    const dotStuffed = this.#opts.isDotStuffed;
    const normalize = this.#opts.isNormalizing;
    const maxLine = this.#opts.maxLineBytes;
    let state = this.#state;
    let line = this.#lineBytes;
    let runStart = start; // start of the run of input octets to keep
    let found = -1;
    // Next CR, LF and NUL at or after i (end when none): found with the native memchr-based
    // indexOf, each octet visited once per kind, so ordinary text is skipped without a JS loop.
    let nextCr = -1;
    let nextLf = -1;
    let nextNul = -1;
    let i = start;
    // In each state an octet is either consumed (i++) or handed unconsumed to another state
    // (`continue` without i++), so it is classified exactly once.
    while (i < end) {
      if (state === S_MID) {
        if (nextCr < i) nextCr = nextIndex(buf, CR, i, end);
        if (nextLf < i) nextLf = nextIndex(buf, LF, i, end);
        if (nextNul < i) nextNul = nextIndex(buf, NUL, i, end);
        let j = nextCr < nextLf ? nextCr : nextLf;
        if (nextNul < j) j = nextNul;
        line += j - i;
        i = j;
        if (i >= end) break;
        const b = buf[i];
        line++;
        if (b === CR) {
          state = S_CR;
        } else if (b === LF) {
          this.defects.bareLf = true;
          if (normalize) {
            this.#keep(buf, runStart, i);
            this.#keepConst(CRLF);
            runStart = i + 1;
            line = 0; // normalised to a line end: the next line starts here
          }
          // A bare LF does not end a line: still one wire line (it counts toward its length).
        } else {
          this.defects.nul = true;
          if (normalize) {
            this.#keep(buf, runStart, i);
            runStart = i + 1;
          }
        }
        i++;
        continue;
      }
      const b = buf[i];
      if (state === S_CR) {
        if (b === LF) {
          line++;
          if (line > maxLine) this.defects.longLine = true;
          line = 0;
          state = dotStuffed ? S_LINE_START : S_MID;
          i++;
          continue;
        }
        // The CR (already kept as content) was bare.
        this.defects.bareCr = true;
        if (normalize) {
          this.#keep(buf, runStart, i);
          this.#keepConst(LF_ONLY);
          runStart = i;
          line = 0;
        }
        state = S_MID;
        continue;
      }
      if (state === S_LINE_START) {
        if (b === DOT) {
          line++;
          this.#keep(buf, runStart, i); // the dot is not content (stuffing or terminator)
          runStart = i + 1;
          state = S_DOT;
          i++;
          continue;
        }
        state = S_MID;
        continue;
      }
      if (state === S_DOT) {
        if (b === CR) {
          line++;
          state = S_DOT_CR;
          runStart = i + 1; // the CR is kept only if it turns out not to be the terminator
          i++;
          continue;
        }
        state = S_MID; // a stuffed dot, removed (RFC 5321 4.5.2)
        line--; // RFC 5321 4.5.3.1.6: the limit is on the text line, without the stuffing dot
        continue;
      }
      // S_DOT_CR
      if (b === LF) {
        found = i + 1;
        runStart = found;
        break;
      }
      // "." CR <not LF>: the dot was stuffing, the CR is bare.
      this.defects.bareCr = true;
      line--;
      if (normalize) {
        this.#keepConst(CRLF);
        line = 0;
      }
      runStart = i;
      state = S_MID;
    }
    // A pending "." or "." CR is not content yet (it may be the terminator); everything before
    // it was kept when the dot was seen.
    if (found === -1 && state !== S_DOT && state !== S_DOT_CR) this.#keep(buf, runStart, end);
    if (line > maxLine) this.defects.longLine = true;
    this.#state = state;
    this.#lineBytes = line;
    return found;
  }

  /** BDAT LAST / end of input: a CR still pending at the very end is a bare CR. */
  finish(): void {
    if (this.#state === S_CR) {
      // The CR was kept as content; nothing followed it.
      this.defects.bareCr = true;
      if (this.#opts.isNormalizing) this.#keepConst(LF_ONLY);
    }
  }

  #keep(buf: Buffer, from: number, to: number): void {
    if (to <= from) return;
    this.#count(to - from);
    if (!this.#isKeeping) return;
    if (to - from >= MIN_VIEW_BYTES) {
      this.#sealBlock();
      this.#chunks.push(buf.subarray(from, to)); // a view: no copy of long runs
    } else {
      this.#copy(buf, from, to);
    }
  }

  #keepConst(b: Buffer): void {
    this.#count(b.length);
    if (this.#isKeeping) this.#copy(b, 0, b.length);
  }

  #copy(src: Buffer, from: number, to: number): void {
    let at = from;
    while (at < to) {
      if (this.#block === null || this.#blockUsed === this.#block.length) {
        this.#sealBlock();
        this.#block = Buffer.allocUnsafe(BLOCK_BYTES);
        this.#blockUsed = 0;
        this.#blockStart = 0;
      }
      const n = Math.min(to - at, this.#block.length - this.#blockUsed);
      src.copy(this.#block, this.#blockUsed, at, at + n);
      this.#blockUsed += n;
      at += n;
    }
  }

  /** Appends the filled part of the block to the chunk list (order with views preserved). */
  #sealBlock(): void {
    if (this.#block !== null && this.#blockUsed > this.#blockStart) {
      this.#chunks.push(this.#block.subarray(this.#blockStart, this.#blockUsed));
      this.#blockStart = this.#blockUsed;
    }
  }

  #count(n: number): void {
    this.size += n;
    if (this.size > this.#opts.maxBytes) this.defects.tooBig = true;
    if (this.#isKeeping && this.isRefused) {
      // Security: a body we will refuse is not buffered.
      this.#isKeeping = false;
      this.#chunks.length = 0;
      this.#block = null;
      this.#blockUsed = 0;
      this.#blockStart = 0;
    }
  }
}

type Mode =
  | { kind: 'lines' }
  | { kind: 'data'; scanner: ContentScanner }
  | { kind: 'bdat'; remaining: number; scanner: ContentScanner | null };

/** Line mode holds nothing of its own: one shared object, not one per connection (issue 11's
 *  per-idle-connection budget counts every object a greeted, silent session keeps). */
const LINES: Mode = Object.freeze({ kind: 'lines' });

/**
 * Holds unconsumed input and yields one frame at a time in the mode the session machine sets.
 * The machine pulls frames only when it is ready for them, so pipelined input after a command
 * that must wait (a policy check, a spool commit, TLS) stays here untouched.
 */
export class Framer {
  #buf: Buffer = EMPTY;
  #pos = 0;
  /** Octets of the current command line already scanned (from #pos). */
  #scanned = 0;
  #lineState = L_SCAN;
  #lineDefect: LineDefect | null = null;
  #mode: Mode = LINES;
  readonly #maxLineBytes: number;

  constructor(maxCommandLineBytes: number) {
    this.#maxLineBytes = maxCommandLineBytes;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.#pos >= this.#buf.length) {
      this.#buf = chunk;
      this.#pos = 0;
    } else {
      // Only the unconsumed tail is copied; the shell stops reading while the machine waits,
      // so this tail is at most one partial line or one read.
      this.#buf = Buffer.concat([this.#buf.subarray(this.#pos), chunk]);
      this.#pos = 0;
    }
  }

  get bufferedBytes(): number {
    return this.#buf.length - this.#pos;
  }

  /** Security: RFC 3207 5 / STARTTLS injection: nothing sent before the handshake survives it. */
  discardBuffered(): number {
    const n = this.bufferedBytes;
    this.#buf = EMPTY;
    this.#pos = 0;
    this.#scanned = 0;
    this.#lineDefect = null;
    this.#lineState = L_SCAN;
    return n;
  }

  expectLines(): void {
    this.#mode = LINES;
  }

  expectData(scanner: ContentScanner): void {
    this.#mode = { kind: 'data', scanner };
  }

  /** scanner null: read and drop the chunk (the command was refused but the octets still come). */
  expectBdat(size: number, scanner: ContentScanner | null): void {
    this.#mode = { kind: 'bdat', remaining: size, scanner };
  }

  get mode(): Mode['kind'] {
    return this.#mode.kind;
  }

  /** The next frame, or null when more input is needed. */
  next(): Frame | null {
    const frame = this.#next();
    if (frame === null) this.#releaseConsumed();
    return frame;
  }

  /**
   * Security: waiting for more input, the framer must not keep the read it has consumed. Node
   * hands each read over as its own buffer (up to 64 KiB), and a reference to it here kept all of
   * it alive as long as the session waited: 2,000 sessions that each sent 64 KiB of a message and
   * stopped held 125 MiB with the bodies already in their files and the body budget at 4 MiB
   * (test/integration/bounded-memory-sessions.test.ts). A short unconsumed tail (part of a
   * command line, at most the line limit) is copied out of its read, for the same reason.
   */
  #releaseConsumed(): void {
    const left = this.#buf.length - this.#pos;
    if (left <= 0) {
      this.#buf = EMPTY;
      this.#pos = 0;
    } else if (this.#pos > 0 && left <= MIN_VIEW_BYTES) {
      this.#buf = Buffer.from(this.#buf.subarray(this.#pos));
      this.#pos = 0;
    }
  }

  #next(): Frame | null {
    const mode = this.#mode;
    if (mode.kind === 'lines') return this.#nextLine();
    if (mode.kind === 'data') {
      const end = this.#buf.length;
      if (this.#pos >= end) return null;
      const after = mode.scanner.scan(this.#buf, this.#pos, end);
      if (after === -1) {
        this.#pos = end;
        return null;
      }
      this.#pos = after;
      this.#mode = LINES;
      return { type: 'data-end' };
    }
    // BDAT: exactly `remaining` octets, whatever they contain.
    if (mode.remaining > 0) {
      const take = Math.min(mode.remaining, this.#buf.length - this.#pos);
      if (take === 0) return null;
      if (mode.scanner !== null) mode.scanner.scan(this.#buf, this.#pos, this.#pos + take);
      this.#pos += take;
      mode.remaining -= take;
      if (mode.remaining > 0) return null;
    }
    this.#mode = LINES;
    return { type: 'bdat-end' };
  }

  #nextLine(): Frame | null {
    const buf = this.#buf;
    const end = buf.length;
    const max = this.#maxLineBytes;
    let i = this.#pos + this.#scanned;
    for (; i < end; i++) {
      const b = buf[i];
      if (b === LF) {
        const lineStart = this.#pos;
        const hasCr = i > lineStart && buf[i - 1] === CR;
        this.#pos = i + 1;
        this.#scanned = 0;
        if (this.#lineState === L_DISCARD) {
          this.#lineState = L_SCAN;
          this.#lineDefect = null;
          continue; // the over-long line was already answered
        }
        // Security: a bare LF ends nothing valid; the line it ends is refused, never executed.
        const defect = this.#lineDefect ?? (hasCr ? null : 'bare-lf');
        const contentEnd = hasCr ? i - 1 : i;
        this.#lineDefect = null;
        if (defect !== null) return { type: 'bad-line', defect };
        return { type: 'line', line: buf.subarray(lineStart, contentEnd) };
      }
      if (this.#lineDefect === null) {
        if (b === NUL) this.#lineDefect = 'nul';
        else if (i > this.#pos && buf[i - 1] === CR) this.#lineDefect = 'bare-cr';
      }
      // +2: this octet and at least the LF still to come must fit in the limit.
      if (this.#lineState === L_SCAN && i - this.#pos + 2 > max) {
        // Security: refuse without buffering: drop what we hold and skip to the line end.
        this.#lineState = L_DISCARD;
        this.#pos = i + 1;
        this.#scanned = 0;
        return { type: 'line-too-long' };
      }
      if (this.#lineState === L_DISCARD) {
        // Keep only a possible CR at the end so CRLF split across reads is still seen.
        this.#pos = i;
      }
    }
    this.#scanned = i - this.#pos;
    return null;
  }
}
