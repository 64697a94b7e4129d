// The assembled message as a content check reads it: parsed header fields, one lookup, and the
// body as a stream, whether the body is in memory or in its body file (read by the shell's
// reader). Never copies the body; reads the file only when a check asks for it.

import type { HeaderField } from './header.ts';

/** Reads `bytes` octets of the transaction's body file from `offset` (the shell owns the file). */
export type SpilledBodyReader = (offset: number, bytes: number) => AsyncIterable<Buffer>;

export type ContentMessage = {
  /** Our trace fields first, then the message's own, as they will be stored (before edits). */
  readonly fields: readonly HeaderField[];
  /** The unfolded value of the first field called `name` (any case); null when there is none. */
  header(name: string): string | null;
  /** Octets of the whole message. */
  readonly size: number;
  /** The body after the header section (and its empty line), as a stream of buffers. */
  body(): AsyncIterable<Buffer>;
};

export type BodySource =
  | { readonly kind: 'memory'; readonly chunks: readonly Buffer[] }
  | { readonly kind: 'spilled'; readonly offset: number; readonly bytes: number };

export function contentMessage(view: { fields: readonly HeaderField[]; size: number; body: BodySource }, readSpilled: SpilledBodyReader | null): ContentMessage {
  const source = view.body;
  return {
    fields: view.fields,
    size: view.size,
    header(name: string): string | null {
      const lower = name.toLowerCase();
      return view.fields.find((f) => f.name.toLowerCase() === lower)?.value ?? null;
    },
    body(): AsyncIterable<Buffer> {
      if (source.kind === 'memory') return fromMemory(source.chunks);
      if (readSpilled === null) throw new Error('the body is in its body file, but no reader was given');
      return readSpilled(source.offset, source.bytes);
    },
  };
}

async function* fromMemory(chunks: readonly Buffer[]): AsyncIterable<Buffer> {
  for (const c of chunks) yield c;
}
