// RFC 8601 5: a border MTA must remove or rename Authentication-Results fields that arrive with
// its own authserv-id, or a sender could forge "spf=pass" under our name for the filters and
// mail clients behind us that trust it. We rename them to X-Original-Authentication-Results (the
// evidence stays readable, nothing trusts it). Pure byte work on the message's header section:
// views of the stored chunks, rebuilt only when a field must change; never reads the body.

import { headerSection, splitAt } from './header.ts';

/** `Authentication-Results` at the start of a field, any case, before optional WSP and ':'. */
const FIELD = /^authentication-results[ \t]*:/i;
const RENAMED_PREFIX = 'X-Original-';

/**
 * The message's chunks with every Authentication-Results field whose authserv-id is `authservId`
 * (case-insensitive) renamed; the same array when there is none. `chunks` hold the canonical
 * message (CRLF lines) as received, before our own trace fields.
 */
export function renameForgedAuthResults(chunks: readonly Buffer[], authservId: string): readonly Buffer[] {
  const section = headerSection(chunks);
  if (section.bytes === 0) return chunks;
  const { head, rest } = splitAt(chunks, section.bytes);
  const header = head.length === 1 ? head[0] : Buffer.concat(head);
  const text = header.toString('latin1'); // one octet per character: byte-exact round trip
  // Cheap test first: almost no message carries the field at all.
  if (!/authentication-results/i.test(text)) return chunks;
  const id = authservId.toLowerCase();
  const lines = text.split('\r\n');
  let isChanged = false;
  for (let i = 0; i < lines.length; i++) {
    if (!FIELD.test(lines[i])) continue;
    // The field's value runs over the continuation lines that follow (RFC 5322 2.2.3).
    let value = lines[i].slice(lines[i].indexOf(':') + 1);
    for (let j = i + 1; j < lines.length && /^[ \t]/.test(lines[j]); j++) value += lines[j];
    if (authservIdOf(value) === id) {
      lines[i] = RENAMED_PREFIX + lines[i];
      isChanged = true;
    }
  }
  if (!isChanged) return chunks;
  return [Buffer.from(lines.join('\r\n'), 'latin1'), ...rest];
}

/** RFC 8601 2.2: the value starts with [CFWS] authserv-id; comments may nest. */
export function authservIdOf(value: string): string {
  let i = 0;
  let depth = 0;
  while (i < value.length) {
    const c = value[i];
    if (depth > 0) {
      if (c === '\\') i++;
      else if (c === '(') depth++;
      else if (c === ')') depth--;
    } else if (c === '(') depth++;
    else if (c !== ' ' && c !== '\t' && c !== '\r' && c !== '\n') break;
    i++;
  }
  const rest = value.slice(i);
  // RFC 8601 2.2: authserv-id is a value (RFC 2045): a token or a quoted-string, so a forger may
  // write "mx.example.test" in quotes.
  const quoted = /^"((?:[^"\\]|\\.)*)"/.exec(rest);
  if (quoted !== null) return quoted[1].replace(/\\(.)/g, '$1').toLowerCase();
  const m = /^[^\s;()]+/.exec(rest);
  return m === null ? '' : m[0].toLowerCase();
}
