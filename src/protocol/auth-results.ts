// RFC 8601 5: a border MTA must remove or rename Authentication-Results fields that arrive with
// its own authserv-id, or a sender could forge "spf=pass" under our name for the filters and
// mail clients behind us that trust it. We rename them to X-Original-Authentication-Results (the
// evidence stays readable, nothing trusts it). Pure byte work on the message's header section:
// views of the stored chunks, rebuilt only when a field must change; never reads the body.

/** `Authentication-Results` at the start of a field, any case, before optional WSP and ':'. */
const FIELD = /^authentication-results[ \t]*:/i;
const RENAMED_PREFIX = 'X-Original-';

/**
 * The message's chunks with every Authentication-Results field whose authserv-id is `authservId`
 * (case-insensitive) renamed; the same array when there is none. `chunks` hold the canonical
 * message (CRLF lines) as received, before our own trace fields.
 */
export function renameForgedAuthResults(chunks: readonly Buffer[], authservId: string): readonly Buffer[] {
  const { header, end } = headerSection(chunks);
  if (header.length === 0) return chunks;
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
  return [Buffer.from(lines.join('\r\n'), 'latin1'), ...rest(chunks, end)];
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
  const m = /^[^\s;()]+/.exec(value.slice(i));
  return m === null ? '' : m[0].toLowerCase();
}

/**
 * The header section (up to and including the CRLF that ends its last field, without the empty
 * line) as one buffer, and the offset where it ends. A message with no empty line is all header.
 */
function headerSection(chunks: readonly Buffer[]): { header: Buffer; end: number } {
  if (chunks.length === 0) return { header: Buffer.alloc(0), end: 0 };
  // An empty first line: no header fields at all.
  if (chunks[0].length >= 2 && chunks[0][0] === 0x0d && chunks[0][1] === 0x0a) return { header: Buffer.alloc(0), end: 0 };
  // Usually the whole header sits in the first chunk: a view, no copy.
  const first = chunks[0].indexOf('\r\n\r\n');
  if (first >= 0) return { header: chunks[0].subarray(0, first + 2), end: first + 2 };
  const all = Buffer.concat(chunks as Buffer[]);
  const at = all.indexOf('\r\n\r\n');
  return at >= 0 ? { header: all.subarray(0, at + 2), end: at + 2 } : { header: all, end: all.length };
}

/** The chunks' bytes from `offset` on, as views. */
function rest(chunks: readonly Buffer[], offset: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = offset;
  for (const c of chunks) {
    if (skip >= c.length) {
      skip -= c.length;
      continue;
    }
    out.push(skip === 0 ? c : c.subarray(skip));
    skip = 0;
  }
  return out;
}
