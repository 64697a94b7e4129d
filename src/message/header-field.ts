// Header fields we write: one-line printable text, RFC 5322 comments, RFC 7208 key-value and
// RFC 8601 values, and folding into a valid field. Pure string work; never emits a CR or LF that
// is not a fold (a field we add is always one field, whatever the text it was built from).
// RFC 5322 2.1.1 (998-octet lines), 2.2.3 (folding), 3.2.2 (comments); RFC 7208 9.1; RFC 8601 2.2.

/** One line of printable text (for comments and log reasons). */
export function oneLine(text: string, max: number): string {
  return text.replace(/[\x00-\x1f\x7f]+/g, ' ').replace(/\s+/g, ' ').trim().slice(0, max);
}

/**
 * Printable ASCII for a header field we add: the message may not be SMTPUTF8, so non-ASCII (raw
 * 8-bit, invisible and bidi characters from a HELO name or sender) becomes "?", as in Received.
 */
export function asciiLine(text: string, max: number): string {
  return oneLine(text, max).replace(/[^\x20-\x7e]/g, '?');
}

/** RFC 5322 3.2.2 ctext: no unescaped parentheses or backslashes. */
export function commentText(text: string): string {
  return asciiLine(text, 400).replace(/[\\()]/g, (c) => `\\${c}`);
}

/** RFC 7208 9.1 key-value: dot-atom when possible, else a quoted-string. */
export function kvValue(value: string): string {
  const v = asciiLine(value, 300);
  return /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/.test(v) ? v : `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/** RFC 8601 2.2 value: a token (RFC 2045) or a quoted-string; domain names are tokens. */
export function arValue(value: string): string {
  const v = asciiLine(value, 300);
  return /^[!#$%&'*+.0-9A-Z^_`a-z{|}~-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/** Undo folding (CRLF + WSP -> WSP) and turn any other control character into a space. */
export function unfold(field: string): string {
  return field.replace(/\r?\n(?=[ \t])/g, '').replace(/[\x00-\x08\x0a-\x1f\x7f]/g, ' ').trim();
}

/** Columns past which a field is folded (RFC 5322 2.1.1 recommends 78). */
const FOLD_AT_COLUMNS = 78;
/** A field name (at most ~80 here) + ": " + one word, or " " + one word, stays within 998. */
const MAX_WORD_CHARS = 900;

/**
 * A valid header field, without the final CRLF (assembly adds it): no CR or LF except folds,
 * every fold is CRLF + one space before a word, no line longer than 998 octets (RFC 5322 2.1.1,
 * 2.2.3). Words longer than a line are cut (they are comments or values, never the field name).
 */
export function foldField(field: string): string {
  const words = unfold(field).split(/[ \t]+/).filter((w) => w !== '').map((w) => (w.length > MAX_WORD_CHARS ? `${w.slice(0, MAX_WORD_CHARS - 3)}...` : w));
  const lines: string[] = [];
  let line = '';
  for (const [i, w] of words.entries()) {
    if (line === '') line = w;
    // The first value word stays with the field name, however long.
    else if (i === 1 || line.length + 1 + w.length <= FOLD_AT_COLUMNS) line += ` ${w}`;
    else {
      lines.push(line);
      line = ` ${w}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines.join('\r\n');
}
