// The spool's contract: what a committed message is, and the writer the server hands it to.
// Owns types only. A 250 after end of data is sent only after commit() resolves (durable:
// written and fsynced, file and directory).

import type { AcceptedMessage, DsnNotify } from '../message/accepted.ts';
import type { BodyFile } from './body-file.ts';

export type { DsnNotify } from '../message/accepted.ts';

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
  /** Held for an operator instead of delivered (a content check's tag, e.g. "virus"). */
  quarantine?: string;
  /** Octets of the stored (canonical, dot-unstuffed) content, Received: header included. */
  size: number;
};

/** Where a committed message is: what readMessage (and a queue) needs to read it back. */
export type Committed = {
  queueId: string;
  /** `<segments|messages>/<file>@<byte offset of the record>`. */
  location: string;
};

export interface SpoolWriter {
  /** Store an accepted message durably (the spool builds its own record from it). Resolves only
   *  after the data and the directory entry are fsynced; rejects (and leaves nothing that
   *  recovery would pick up) otherwise. */
  commit(message: AcceptedMessage, body?: BodyFile | null): Promise<Committed>;
  /** The body file of a transaction whose content grows past what a session holds in memory. */
  bodyFile(name: string): BodyFile;
  close(): Promise<void>;
}
