// The delivery contract shared by the queue manager and every transport (SMTP, LMTP, Maildir):
// what one delivery attempt is given and what it must answer, per recipient. Types only.
// A courier never retries, never bounces and never writes queue state: it tries once and reports;
// the queue decides (RFC 5321 4.5.4 retry strategy, RFC 3461 notifications). As chasquid's
// courier and Stalwart's delivery report: a result per recipient, and whether it is permanent.

import type { DsnNotify } from '../message/accepted.ts';

/** A reply as the next hop (or we, for local failures) gave it. */
export type DeliveryReply = {
  code: number;
  /** RFC 3463 class.subject.detail when the peer sent one (or we set one), else null. */
  enhanced: string | null;
  /** Text lines without the code prefix; bounded by the client. */
  lines: readonly string[];
};

/** delivered: the next hop took responsibility (2xx after the data, or written to a Maildir).
 *  deferred: try again later (4xx, connection trouble, timeouts, TLS required but not offered).
 *  failed: permanent (5xx, null MX, loop); the queue returns a failure DSN if NOTIFY allows.
 *  relayed: delivered to a next hop that lacks DSN while NOTIFY=SUCCESS was asked (RFC 3461 5.2.2.3). */
export type RecipientStatus = 'delivered' | 'deferred' | 'failed' | 'relayed';

export type RecipientResult = {
  status: RecipientStatus;
  reply: DeliveryReply;
  /** The host that gave the reply (DSN Remote-MTA), null for local transports and local errors. */
  remoteMta: string | null;
};

export type DeliveryRecipient = {
  /** Index into the stored envelope's recipients: the queue's key for this recipient's state. */
  index: number;
  /** The address to deliver to (after aliases; BATV tag stripped for local delivery). */
  address: string;
  notify?: DsnNotify;
  orcpt?: { addrType: string; address: string };
};

/** One attempt: one message to the recipients of one destination. */
export type DeliveryJob = {
  queueId: string;
  /** The reverse-path to send (BATV-signed when our policy signs it); '' is the null path. */
  reversePath: string;
  recipients: readonly DeliveryRecipient[];
  bodyType: '7BIT' | '8BITMIME' | 'BINARYMIME';
  smtputf8: boolean;
  ret?: 'FULL' | 'HDRS';
  envid?: string;
  /** Octets of the stored content (canonical CRLF, dot-unstuffed). */
  size: number;
  /** The stored content, read from the spool on demand (the courier dot-stuffs it for the wire). */
  content(): AsyncIterable<Buffer>;
};

export interface Courier {
  /** One attempt; resolves with one result per job recipient, in job order. Never rejects for a
   *  peer's fault (a hang, garbage, a closed socket): that is a deferred or failed result. The
   *  signal aborts the attempt (shutdown): unfinished recipients come back deferred. */
  deliver(job: DeliveryJob, signal: AbortSignal): Promise<RecipientResult[]>;
  /** Closes cached connections. */
  close(): Promise<void>;
}

/** Where mail for a domain goes (the `[routes]` table). */
export type Route =
  | { kind: 'mx'; tls: TlsPolicy }
  | { kind: 'smtp'; host: string; port: number; tls: TlsPolicy }
  | { kind: 'lmtp'; host: string; port: number }
  | { kind: 'lmtp'; socket: string }
  | { kind: 'maildir'; path: string }
  /** Accepted and thrown away once queued (Postfix's discard transport: benchmarks, sinkholes). */
  | { kind: 'discard' }
  | { kind: 'refuse' };

/** opportunistic: STARTTLS when offered, else in the clear. required: defer when not offered. */
export type TlsPolicy = 'opportunistic' | 'required' | 'none';
