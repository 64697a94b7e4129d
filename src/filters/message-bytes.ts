// The assembled message as the content scanners send it (clamd, spamd, rspamd): its header fields
// as the content stage sees them (our trace fields first), the empty line, then the body, which
// is streamed from memory or the body file and never copied whole. The octet count is known
// before the first byte is sent (spamd's Content-length, clamd's stream limit).
// Never changes a byte: a scanner must judge exactly what is stored (the smuggling lesson).

import type { ContentMessage } from '../message/content.ts';

export type MessageBytes = {
  /** Octets of the whole message. */
  readonly bytes: number;
  /** The message: header section first (one buffer), then the body's own buffers. */
  chunks(): AsyncIterable<Buffer>;
};

export function messageBytes(message: ContentMessage): MessageBytes {
  const head = message.fields.map((f) => `${f.raw}\r\n`).join('');
  const fieldBytes = Buffer.byteLength(head, 'latin1');
  // The header section's empty line is there exactly when the message is longer than its fields
  // (canonical content: without it there is no body either).
  const hasSeparator = message.size >= fieldBytes + 2;
  const header = Buffer.from(hasSeparator ? `${head}\r\n` : head, 'latin1');
  return {
    bytes: message.size,
    async *chunks(): AsyncIterable<Buffer> {
      yield header;
      if (hasSeparator) yield* message.body();
    },
  };
}
