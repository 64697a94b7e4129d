// The spool's contract: what a committed message is, and the writer the server hands it to.
// Owns types only. A 250 after end of data is sent only after commit() resolves (durable:
// written and fsynced, file and directory).

export type DsnNotify = 'NEVER' | Array<'SUCCESS' | 'FAILURE' | 'DELAY'>;

export type EnvelopeRecipient = {
  /** The forward-path as received, without angle brackets (source route removed). */
  address: string;
  /** RFC 3461 NOTIFY, absent when the client sent none. */
  notify?: DsnNotify;
  /** RFC 3461 ORCPT: address type and the decoded xtext address. */
  orcpt?: { addrType: string; address: string };
};

export type Envelope = {
  /** Spool format version of the envelope record. */
  version: 1;
  queueId: string;
  sessionId: string;
  /** ISO 8601 time the message was accepted. */
  receivedAt: string;
  client: { address: string; port: number; heloName: string | null; isTls: boolean };
  /** The reverse-path without angle brackets; '' is the null reverse-path. */
  reversePath: string;
  body: '7BIT' | '8BITMIME' | 'BINARYMIME';
  smtputf8: boolean;
  /** RFC 3461 RET and ENVID (ENVID decoded from xtext). */
  ret?: 'FULL' | 'HDRS';
  envid?: string;
  recipients: EnvelopeRecipient[];
  /** Octets of the stored (canonical, dot-unstuffed) content, Received: header included. */
  size: number;
};

export interface SpoolWriter {
  /** Store envelope and content durably. Resolves only after the data and the directory entry
   *  are fsynced; rejects (and leaves nothing that recovery would pick up) otherwise. */
  commit(envelope: Envelope, body: readonly Buffer[]): Promise<void>;
  close(): Promise<void>;
}
