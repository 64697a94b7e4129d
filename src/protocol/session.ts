// The two state types of an SMTP session: per-connection security state and per-transaction state.
// A reset replaces the Transaction; nothing here clears SessionSecurity fields one by one except
// where the table below says so. See ../../docs/architecture.md and STYLE.md "Two state types".
//
// | Event                   | Transaction | HELO identity | TLS    | Counters, verdict log |
// | RSET                    | dropped     | kept          | kept   | kept                  |
// | end of data (any reply) | dropped     | kept          | kept   | kept                  |
// | EHLO/HELO again         | dropped     | replaced      | kept   | kept                  |
// | STARTTLS                | dropped     | cleared       | set    | kept                  |

import type { Mailbox } from './address.ts';
import type { Reply } from './replies.ts';

/** RFC 3461 4.1 NOTIFY. */
export type DsnNotify = 'NEVER' | Array<'SUCCESS' | 'FAILURE' | 'DELAY'>;

export type Peer = { address: string; port: number };

/** A refusal recorded in the session's verdict log (RSET and end of data never clear it). */
export type Verdict = {
  stage: PolicyStage;
  action: 'tempfail' | 'reject' | 'disconnect';
  check: string;
  reason: string;
  /** What the verdict is about, as the check defines it (e.g. a recipient); '' for the session. */
  key: string;
  reply: Reply;
  atMs: number;
};

export type PolicyStage = 'connect' | 'helo' | 'mail' | 'rcpt' | 'data';

/** Lives as long as the connection. RSET and end of data never touch it. */
export type SessionSecurity = {
  readonly id: string;
  readonly peer: Peer;
  readonly local: Peer;
  /** Client may relay (decided by the shell from relay.networks, before the greeting). */
  readonly isRelayClient: boolean;
  readonly connectedAtMs: number;
  isTls: boolean;
  tlsProtocol: string | null;
  heloName: string | null;
  heloVerb: 'HELO' | 'EHLO' | null;
  counters: {
    commands: number;
    errors: number;
    transactions: number;
    messages: number;
    recipients: number;
  };
  /** Append-only: policy verdicts of this session (filled by the policy pipeline, issue 5). */
  readonly verdicts: Verdict[];
};

export type TransactionRecipient = {
  mailbox: Mailbox | 'postmaster';
  address: string;
  notify?: DsnNotify;
  orcpt?: { addrType: string; address: string };
};

/** Lives from MAIL to RSET, a new HELO/EHLO, STARTTLS or the end of data. */
export type Transaction = {
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
};

export function newSessionSecurity(init: {
  id: string;
  peer: Peer;
  local: Peer;
  isRelayClient: boolean;
  isTls: boolean;
  nowMs: number;
}): SessionSecurity {
  return {
    id: init.id,
    peer: init.peer,
    local: init.local,
    isRelayClient: init.isRelayClient,
    connectedAtMs: init.nowMs,
    isTls: init.isTls,
    tlsProtocol: null,
    heloName: null,
    heloVerb: null,
    counters: { commands: 0, errors: 0, transactions: 0, messages: 0, recipients: 0 },
    verdicts: [],
  };
}
