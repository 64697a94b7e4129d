// Hop counting: how many `Received:` trace fields the header section of a message holds, the
// loop detector of RFC 5321 6.3 ("a relay hop count" that a server may refuse past a limit of at
// least 100). Pure byte work on canonical content in chunks; reads only the header section, and
// gives the same count however the content is cut into chunks.
// Lives in message/, not delivery/: the session core refuses at the end of the data (554 5.4.6)
// and must not import delivery code; the queue may use it too.

/** RFC 5321 6.3: a message with more than this many Received fields is in a loop. */
export const MAX_RECEIVED_FIELDS = 100;

const NAME = Buffer.from('received');
const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;

// Scanner states; 1..NAME.length mean "that many octets of the name matched at a line start".
const S_LINE_START = 0;
const S_AFTER_NAME = NAME.length + 1; // the name matched: optional WSP (obsolete syntax), then ':'
const S_SKIP_LINE = NAME.length + 2;
const S_EMPTY_CR = NAME.length + 3; // CR at a line start: CRLF here ends the header section

/**
 * The `Received:` fields (the name compared case-insensitively, RFC 5322 1.2.2) at the start of
 * the header lines of `chunks`, counted up to `stopAfter` (the scan ends there: a caller asking
 * "more than 100?" never reads a huge header section whole). The header section ends at the first
 * empty line; content that starts with one has no header fields.
 */
export function countReceivedFields(chunks: readonly Buffer[], stopAfter = Number.MAX_SAFE_INTEGER): number {
  let count = 0;
  let state = S_LINE_START;
  for (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (b === LF) {
        if (state === S_EMPTY_CR || state === S_LINE_START) return count; // the empty line
        state = S_LINE_START;
        continue;
      }
      if (state === S_LINE_START && b === CR) {
        state = S_EMPTY_CR;
        continue;
      }
      if (state === S_SKIP_LINE) continue;
      if (state < NAME.length) {
        // ASCII letters only: 0x20 folds upper to lower case.
        state = (b | 0x20) === NAME[state] ? state + 1 : S_SKIP_LINE;
        continue;
      }
      if (state === NAME.length || state === S_AFTER_NAME) {
        if (b === COLON) {
          count++;
          if (count >= stopAfter) return count;
          state = S_SKIP_LINE;
        } else state = b === SP || b === HTAB ? S_AFTER_NAME : S_SKIP_LINE;
        continue;
      }
      state = S_SKIP_LINE; // S_EMPTY_CR followed by something other than LF
    }
  }
  return count;
}

/** Whether the message has passed too many hops (RFC 5321 6.3): refuse it, with 5.4.6 (RFC 3463: routing loop). */
export function hasTooManyHops(chunks: readonly Buffer[]): boolean {
  return countReceivedFields(chunks, MAX_RECEIVED_FIELDS + 1) > MAX_RECEIVED_FIELDS;
}
