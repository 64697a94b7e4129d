// The message's header section: where it ends, its fields, and edits to them. Pure byte work on
// canonical (CRLF) content; never reads past the header section.
// RFC 5322 2.1 (header section, then an empty line, then the body), 2.2 (fields), 2.2.3 (folding).

const CRLF_CRLF = Buffer.from('\r\n\r\n');

/**
 * The octets of the header section at the start of `chunks`, including the empty line that ends
 * it (`hasSeparator`); the whole content when it has no empty line; 0 when it starts with one
 * (no fields: the empty line then belongs to the body).
 */
export function headerSection(chunks: readonly Buffer[]): { bytes: number; hasSeparator: boolean } {
  if (chunks.length === 0) return { bytes: 0, hasSeparator: false };
  const first = chunks[0];
  // The first two octets, wherever the chunks are cut.
  const second = first.length >= 2 ? first[1] : chunks.find((c, i) => i > 0 && c.length > 0)?.[first.length === 1 ? 0 : 1];
  if (first[0] === 0x0d && second === 0x0a) return { bytes: 0, hasSeparator: false };
  // Usually the whole header sits in the first chunk: no copy.
  const at = first.indexOf(CRLF_CRLF);
  if (at >= 0) return { bytes: at + 4, hasSeparator: true };
  const all = Buffer.concat(chunks as Buffer[]);
  const end = all.indexOf(CRLF_CRLF);
  return end >= 0 ? { bytes: end + 4, hasSeparator: true } : { bytes: all.length, hasSeparator: false };
}

/** The first `bytes` octets of `chunks` and the rest, as views (no copy). */
export function splitAt(chunks: readonly Buffer[], bytes: number): { head: Buffer[]; rest: Buffer[] } {
  const head: Buffer[] = [];
  const rest: Buffer[] = [];
  let left = bytes;
  for (const c of chunks) {
    if (left >= c.length) {
      if (c.length > 0) head.push(c);
      left -= c.length;
    } else if (left > 0) {
      head.push(c.subarray(0, left));
      rest.push(c.subarray(left));
      left = 0;
    } else rest.push(c);
  }
  return { head, rest };
}

export type HeaderField = {
  /** As written (compare case-insensitively); '' for a line that is no field (kept verbatim). */
  readonly name: string;
  /** The unfolded value, without the leading space. */
  readonly value: string;
  /** The field's lines as they are, without the final CRLF. */
  readonly raw: string;
};

const FIELD_NAME = /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/;

/** The fields of a header section (latin1 text, one character per octet: byte-exact). */
export function parseFields(header: Buffer): HeaderField[] {
  let text = header.toString('latin1');
  if (text.endsWith('\r\n\r\n')) text = text.slice(0, -2);
  if (text.endsWith('\r\n')) text = text.slice(0, -2);
  if (text === '') return [];
  const fields: HeaderField[] = [];
  let current: string[] = [];
  const flush = (): void => {
    if (current.length === 0) return;
    const raw = current.join('\r\n');
    const m = FIELD_NAME.exec(raw);
    const name = m === null ? '' : m[1];
    const value = m === null ? '' : raw.slice(m[0].length).replace(/\r\n(?=[ \t])/g, '').trim();
    fields.push({ name, value, raw });
    current = [];
  };
  for (const line of text.split('\r\n')) {
    if ((line.startsWith(' ') || line.startsWith('\t')) && current.length > 0) current.push(line);
    else {
      flush();
      current.push(line);
    }
  }
  flush();
  return fields;
}

/** The header section rebuilt from fields (each gets its CRLF), with the empty line when `hasSeparator`. */
export function formatFields(fields: readonly HeaderField[], hasSeparator: boolean): Buffer {
  let text = '';
  for (const f of fields) text += `${f.raw}\r\n`;
  if (hasSeparator) text += '\r\n';
  return Buffer.from(text, 'latin1');
}
