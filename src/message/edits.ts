// What a content check may ask to change in a message before it is stored: header fields,
// recipients, the sender, the body, a quarantine tag, or dropping it (discard). Types only;
// applied in one place (assemble.ts).
// Field names compare case-insensitively (RFC 5322 1.2.2).

/** One edit of the message's header section, as the content checks saw it (our trace fields included). */
export type HeaderEdit =
  /** Insert a field ("Name: value", folded or not) above the first field. */
  | { readonly op: 'add'; readonly field: string }
  /** Replace the value of the `index`-th (1-based) field called `name`; it keeps its place. */
  | { readonly op: 'change'; readonly name: string; readonly index: number; readonly value: string }
  /** Remove the `index`-th (1-based) field called `name`. */
  | { readonly op: 'delete'; readonly name: string; readonly index: number }
  /**
   * Insert a field at position `index` (0 = above the first field; past the last = below it), as
   * a milter's SMFIR_INSHEADER / SMFIR_ADDHEADER. Its folding (CRLF + white space) is kept when
   * valid (a DKIM-Signature's "simple" canonicalization depends on it), else it is refolded.
   */
  | { readonly op: 'insert'; readonly index: number; readonly field: string };

/** One edit of the recipients (addresses as `local@domain`, compared case-insensitively). */
export type RecipientEdit = { readonly op: 'add'; readonly address: string } | { readonly op: 'delete'; readonly address: string };

export type MessageEdits = {
  readonly headers?: readonly HeaderEdit[];
  readonly recipients?: readonly RecipientEdit[];
  /** Store the message held for an operator (e.g. "virus", "spam") instead of for delivery. */
  readonly quarantine?: string;
  /** A new reverse-path (`local@domain`, '' for the null path); invalid addresses are ignored. */
  readonly sender?: string;
  /** A new body (everything after the header section), made canonical (CRLF) when applied. */
  readonly body?: readonly Buffer[];
  /** Accept the message and drop it: nothing is stored (answered 250, logged). */
  readonly discard?: boolean;
};

/** Several checks' (or filters') edits as one: header and recipient edits in check order, the first quarantine
 *  tag, the last sender and body, discard when any asks. */
export function mergeEdits(all: readonly MessageEdits[]): MessageEdits {
  if (all.length === 1) return all[0];
  const quarantine = all.find((e) => e.quarantine !== undefined)?.quarantine;
  const sender = all.findLast((e) => e.sender !== undefined)?.sender;
  const body = all.findLast((e) => e.body !== undefined)?.body;
  return {
    headers: all.flatMap((e) => e.headers ?? []),
    recipients: all.flatMap((e) => e.recipients ?? []),
    ...(quarantine !== undefined ? { quarantine } : {}),
    ...(sender !== undefined ? { sender } : {}),
    ...(body !== undefined ? { body } : {}),
    ...(all.some((e) => e.discard === true) ? { discard: true } : {}),
  };
}
