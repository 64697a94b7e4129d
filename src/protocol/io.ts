// The session machine's contract with its shell: the inputs it takes and the outputs it emits.
// Types only. Every input carries `nowMs`: time enters the core only this way.
// STYLE.md "The sans-I/O core".

import type { Envelope } from '../spool/types.ts';
import type { Reply } from './replies.ts';
import type { Peer, RecipientView, SessionView, TlsState, TransactionView } from './session.ts';
import type { PolicyStage, PolicyVerdict } from './verdict.ts';

export type Input =
  | { type: 'connected'; nowMs: number; sessionId: string; peer: Peer; local: Peer; isRelayClient: boolean; proxy?: Peer | null; tls?: TlsState | null }
  | { type: 'bytes'; nowMs: number; data: Buffer }
  | { type: 'verdict'; nowMs: number; verdict: PolicyVerdict }
  | { type: 'committed'; nowMs: number }
  | { type: 'commit-failed'; nowMs: number; reason: string }
  | { type: 'tls-ready'; nowMs: number; tls: TlsState }
  | { type: 'tls-failed'; nowMs: number; reason: string }
  | { type: 'timeout'; nowMs: number }
  | { type: 'shutdown'; nowMs: number }
  | { type: 'end-of-input'; nowMs: number }
  /** The spool's free space fell below (or rose back above) its floor: MAIL is refused with
   *  452 4.3.1 while it is low, so no client uploads a body only to get a 451. */
  | { type: 'spool-space'; nowMs: number; isLow: boolean };

export type LogLevel = 'debug' | 'info' | 'warn';

/** Ask the policy pipeline for a verdict; the machine waits for a `verdict` input. */
export type PolicyRequest = {
  type: 'policy';
  stage: PolicyStage;
  session: SessionView;
  transaction: TransactionView | null;
  /** Set at the rcpt stage: the recipient being checked. */
  recipient: RecipientView | null;
  /** The HELO/EHLO name: at the helo stage the one being announced, later the session's. */
  heloName: string | null;
};

export type Output =
  | { type: 'reply'; reply: Reply }
  | { type: 'start-tls' }
  | PolicyRequest
  | { type: 'commit'; envelope: Envelope; body: Buffer[] }
  | { type: 'close' }
  | { type: 'log'; level: LogLevel; msg: string; fields?: Record<string, unknown> };

/** What the shell should wait for next, and so which timeout applies. */
export type Phase = 'command' | 'data' | 'waiting' | 'closed';
