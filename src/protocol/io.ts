// The session machine's contract with its shell: the inputs it takes and the outputs it emits.
// Types only. Every input carries `nowMs`: time enters the core only this way.
// STYLE.md "The sans-I/O core".

import type { AcceptedMessage } from '../message/accepted.ts';
import type { BodySource } from '../message/content.ts';
import type { HeaderField } from '../message/header.ts';
import type { MachineDefenseRule } from './deadlines.ts';
import type { Reply } from './replies.ts';
import type { Peer, RecipientView, SessionView, TlsState, TransactionView } from './session.ts';
import type { PolicyStage, PolicyVerdict } from './verdict.ts';

export type Input =
  /** `refusal`: the client was refused at connect (a block list): this reply (554) replaces the
   *  greeting and the session is in 554 mode (only QUIT is served, for a bounded time).
   *  `isGreetingBegun`: the shell sent `220-` and the greeting text already (pregreet): the
   *  machine's greeting is the final `220 ` line, and a connect-stage refusal comes after it. */
  | { type: 'connected'; nowMs: number; sessionId: string; peer: Peer; local: Peer; isRelayClient: boolean; proxy?: Peer | null; tls?: TlsState | null; refusal?: Reply | null; isGreetingBegun?: boolean }
  | { type: 'bytes'; nowMs: number; data: Buffer }
  | { type: 'verdict'; nowMs: number; verdict: PolicyVerdict }
  | { type: 'committed'; nowMs: number }
  /** The transform step's answer (e.g. the message DKIM-signed). */
  | { type: 'transformed'; nowMs: number; message: AcceptedMessage }
  | { type: 'transform-failed'; nowMs: number; reason: string }
  | { type: 'commit-failed'; nowMs: number; reason: string }
  | { type: 'tls-ready'; nowMs: number; tls: TlsState }
  | { type: 'tls-failed'; nowMs: number; reason: string }
  | { type: 'timeout'; nowMs: number }
  /** The time has come for one of the machine's deadlines (SmtpMachine.nextDeadlineMs): it judges them. */
  | { type: 'tick'; nowMs: number }
  /** The client's network is remembered by the tarpit (defense/tarpit-memory.ts, looked up while the
   *  session runs): from now on its first error is already delayed. */
  | { type: 'tarpit-remembered'; nowMs: number }
  /** Stress mode went on or off (server/stress.ts): under it every timeout is at most limits.stress_timeout_seconds. */
  | { type: 'stress'; nowMs: number; isOn: boolean }
  | { type: 'shutdown'; nowMs: number }
  | { type: 'end-of-input'; nowMs: number }
  /** The spool's free space fell below (or rose back above) its floor: MAIL is refused with
   *  452 4.3.1 while it is low, so no client uploads a body only to get a 451. */
  | { type: 'spool-space'; nowMs: number; isLow: boolean }
  /** The replies written so far have gone out (machine.isHeldForOutput): answer more commands. */
  | { type: 'output-drained'; nowMs: number };

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
  /** At the content stage: the assembled message. */
  message: MessageView | null;
};

/**
 * The assembled message as content checks see it: our trace fields and the message's own header
 * fields (parsed), and the body after the header section. `body` in memory is a list of views;
 * a body already written to its file (spilled) is read by the shell.
 */
export type MessageView = {
  readonly fields: readonly HeaderField[];
  readonly size: number;
  readonly body: BodySource;
};

export type Output =
  | { type: 'reply'; reply: Reply }
  | { type: 'start-tls' }
  | PolicyRequest
  /** Run the transform step (configured only: MachineConfig.hasTransform); answer `transformed`. */
  | { type: 'transform'; message: AcceptedMessage }
  | { type: 'commit'; message: AcceptedMessage }
  /** Append content to the transaction's body file (created by the first append; in order). */
  | { type: 'append-body'; seq: number; chunks: Buffer[] }
  /** The transaction whose body is in a file is over (stored or not): remove the file. */
  | { type: 'discard-body'; seq: number }
  /** End the session. `quit`: the client asked (QUIT, answered 221), so nothing it sends after counts. */
  | { type: 'close'; quit?: true }
  | { type: 'log'; level: LogLevel; msg: string; fields?: Record<string, unknown> }
  /** The session entered 554 mode through a connect-stage verdict (a DNS list, a remembered
   *  refusal), right after its 554 (or after the final 220 line of a begun greeting): the shell
   *  holds it under limits.max_refused_sessions, as it does a blocked client, or closes it. */
  | { type: 'refused-mode' }
  /** A connection defense fired (defense/events.ts logs and counts it): the rule, its limit, what was measured. */
  | { type: 'defense'; rule: MachineDefenseRule; limit: string | number; value?: string | number; reply?: Reply };

/** What the shell should wait for next, and so which timeout applies. */
export type Phase = 'command' | 'data' | 'waiting' | 'closed';
