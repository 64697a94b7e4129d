// What the session machine hands to the spool for one accepted message: the envelope facts and
// the final content (our trace fields, the edited header section, the body). Types only; the
// spool builds its own record from this (spool/record.ts), so the core knows no storage format.
// RFC 5321 4.4 (trace), RFC 3461 (DSN parameters).

/** RFC 3461 4.1 NOTIFY. */
export type DsnNotify = 'NEVER' | Array<'SUCCESS' | 'FAILURE' | 'DELAY'>;

export type AcceptedRecipient = {
  /** The forward-path as received, without angle brackets (source route removed). */
  readonly address: string;
  readonly notify?: DsnNotify;
  /** RFC 3461 ORCPT: address type and the decoded xtext address. */
  readonly orcpt?: { readonly addrType: string; readonly address: string };
};

/**
 * Where the content after `head` is: in memory, or already written to the transaction's body
 * file (`bytes` octets from `offset`), because it grew past the in-memory threshold.
 */
export type BodyRest =
  | { readonly kind: 'memory'; readonly chunks: readonly Buffer[] }
  | { readonly kind: 'spilled'; readonly offset: number; readonly bytes: number };

export type AcceptedMessage = {
  readonly queueId: string;
  readonly sessionId: string;
  readonly receivedAtMs: number;
  readonly client: { readonly address: string; readonly port: number; readonly heloName: string | null; readonly isTls: boolean };
  /** `local@domain` without angle brackets; '' is the null reverse-path. */
  readonly reversePath: string;
  readonly bodyType: '7BIT' | '8BITMIME' | 'BINARYMIME';
  readonly smtputf8: boolean;
  readonly ret?: 'FULL' | 'HDRS';
  readonly envid?: string;
  readonly recipients: readonly AcceptedRecipient[];
  /** Set by a content check: the queue holds the message for an operator instead of delivering it. */
  readonly quarantine?: string;
  /** Our fields (policy fields, Received) and the message's header section, as stored. */
  readonly head: readonly Buffer[];
  readonly rest: BodyRest;
  /** Octets of the stored content: head plus rest. */
  readonly size: number;
};

/** The stored content as one list of buffers (a message whose body is in memory). */
export function contentChunks(message: AcceptedMessage): Buffer[] {
  if (message.rest.kind !== 'memory') throw new Error('the body of this message is in its body file');
  return [...message.head, ...message.rest.chunks];
}
