// The two state types of an SMTP session: per-connection security state and per-transaction
// state, and the read-only views of them that checks get. Everything that lives for one
// transaction (envelope, recipients, the content being read, the current reader) is in
// Transaction and nothing else is, so dropping the transaction drops all of it; how each event
// resets state is the table in reset.ts. STYLE.md "Two state types".

import type { Mailbox } from './address.ts';
import type { ContentScanner } from './framing.ts';
import type { Reply } from './replies.ts';
import type { VerdictRecord } from './verdict.ts';

export type { PolicyStage, VerdictRecord } from './verdict.ts';

export type { DsnNotify } from '../message/accepted.ts';
import type { DsnNotify } from '../message/accepted.ts';

export type Peer = { address: string; port: number };

/** What the client said it is (RFC 5321 4.1.1.1): the verb decides ESMTP, the name is untrusted. */
export type HeloIdentity = { readonly verb: 'HELO' | 'EHLO'; readonly name: string };

/** The TLS layer under the session (RFC 3207), once a handshake has completed. */
export type TlsState = { readonly protocol: string; readonly cipher: string };

/** Who the client authenticated as (RFC 4954); always null until submission exists. */
export type AuthState = { readonly identity: string; readonly mechanism: string };

const NO_VERDICTS: readonly VerdictRecord[] = Object.freeze([]);

/** Lives as long as the connection. Only the reset table (reset.ts) changes helo and tls. */
export type SessionSecurity = {
  readonly id: string;
  /** The real client: from the PROXY header when a trusted proxy sent one, else the socket peer. */
  readonly peer: Peer;
  readonly local: Peer;
  /** The load balancer that relayed the connection (PROXY protocol); null for a direct client. */
  readonly proxy: Peer | null;
  /** Client may relay (decided by the shell from relay.networks, before the greeting). */
  readonly isRelayClient: boolean;
  readonly connectedAtMs: number;
  helo: HeloIdentity | null;
  tls: TlsState | null;
  auth: AuthState | null;
  readonly counters: {
    commands: number;
    errors: number;
    /** Commands the facts table marks as junk (NOOP, RSET, VRFY, EXPN, HELP). */
    junk: number;
    transactions: number;
    messages: number;
    recipients: number;
  };
  /** Append-only: the refusals of this session, written by the machine from policy verdicts.
   *  Starts as one shared empty list (most sessions are never refused, and an idle connection's
   *  every object counts, issue 11); the machine replaces it with a longer copy on a refusal. */
  verdicts: readonly VerdictRecord[];
};

export type TransactionRecipient = {
  mailbox: Mailbox | 'postmaster';
  address: string;
  notify?: DsnNotify;
  orcpt?: { addrType: string; address: string };
};

/**
 * What the machine reads next within a transaction. `skip-bdat`: a chunk whose octets are read
 * and dropped, answered with `refusal` (RFC 3030 2: the octets follow the command whatever the
 * answer); `isCounted` says whether that answer counts as a client error.
 */
export type Reader =
  | { readonly kind: 'command' }
  | { readonly kind: 'data' }
  | { readonly kind: 'bdat'; readonly chunkBytes: number; readonly isLast: boolean }
  | { readonly kind: 'skip-bdat'; readonly chunkBytes: number; readonly isLast: boolean; readonly refusal: Reply; readonly isCounted: boolean };

export const COMMAND_READER: Reader = { kind: 'command' };

/** Lives from MAIL to RSET, a new HELO/EHLO, STARTTLS or the end of data. */
export type Transaction = {
  readonly kind: 'open';
  /** 1-based number of this transaction within the session; part of the queue id. */
  readonly seq: number;
  readonly reversePath: Mailbox | null;
  readonly body: '7BIT' | '8BITMIME' | 'BINARYMIME';
  readonly smtputf8: boolean;
  readonly declaredSize: number | null;
  readonly ret?: 'FULL' | 'HDRS';
  readonly envid?: string;
  readonly recipients: TransactionRecipient[];
  /** Set once BDAT has been used: DATA is then refused (RFC 3030 3). */
  usedBdat: boolean;
  /** Header fields (no CRLF) policy checks add to the message, above our Received field. */
  readonly addedHeaders: string[];
  reader: Reader;
  /** The message content being read (DATA, or the BDAT chunks so far); null before. */
  content: ContentScanner | null;
  /** Set once the content grew past what a session holds in memory: the header section stays
   *  here, everything after it has gone to the body file (`append-body` outputs). */
  spilled: { header: Buffer; bytes: number } | null;
  /** Held octets when the header's end was last looked for (a declared-large message, or one
   *  the body budget wants spilled). */
  headerProbeBytes: number;
  /** Octets of the process-wide body budget (body-budget.ts) this content holds: what it keeps
   *  in memory before its spill. Given back when it spills or the transaction ends. */
  reservedBytes: number;
};

/**
 * What is left of a BDAT message refused before its LAST chunk: the client may have pipelined
 * more chunks; they are read and dropped with the same refusal, uncounted (RFC 3030 4.1), until
 * LAST. Any reset drops it like a transaction. (A BDAT without MAIL holds it for its own chunk
 * only: each such chunk is refused, and counted, on its own.)
 */
export type RefusedMessage = {
  readonly kind: 'refused';
  readonly refusal: Reply;
  reader: Reader;
};

/** The machine's transaction slot. */
export type TransactionSlot = Transaction | RefusedMessage | null;

/** The queue id a transaction's message is stored under: known from MAIL on (milters get it as macro `i`). */
export function queueIdFor(sessionId: string, seq: number): string {
  return `${sessionId}${seq.toString(36).toUpperCase().padStart(2, '0')}`;
}

/** A read-only view all the way down: what checks and outputs hand out. */
export type DeepReadonly<T> = T extends (...args: never[]) => unknown
  ? T
  : T extends ReadonlyArray<infer E>
    ? ReadonlyArray<DeepReadonly<E>>
    : T extends object
      ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
      : T;

export type SessionView = DeepReadonly<SessionSecurity>;
export type TransactionView = DeepReadonly<Omit<Transaction, 'reader' | 'content' | 'spilled' | 'headerProbeBytes' | 'reservedBytes'>>;
export type RecipientView = DeepReadonly<TransactionRecipient>;

export function newSessionSecurity(init: {
  id: string;
  peer: Peer;
  local: Peer;
  proxy?: Peer | null;
  isRelayClient: boolean;
  tls?: TlsState | null;
  nowMs: number;
}): SessionSecurity {
  return {
    id: init.id,
    peer: init.peer,
    local: init.local,
    proxy: init.proxy ?? null,
    isRelayClient: init.isRelayClient,
    connectedAtMs: init.nowMs,
    helo: null,
    tls: init.tls ?? null,
    auth: null,
    counters: { commands: 0, errors: 0, junk: 0, transactions: 0, messages: 0, recipients: 0 },
    verdicts: NO_VERDICTS,
  };
}
