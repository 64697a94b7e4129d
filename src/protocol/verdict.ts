// The verdict a policy check returns, and the record the session keeps of each refusal.
// Types only. A check returns a verdict; only the session machine writes the verdict log.
// STYLE.md "Verdicts and checks".

import type { MessageEdits } from '../message/edits.ts';
import type { Reply } from './replies.ts';

export type { HeaderEdit, MessageEdits, RecipientEdit } from '../message/edits.ts';

/** Where in the session a check runs. `content` sees the assembled message (after `data`). */
export type PolicyStage = 'connect' | 'helo' | 'mail' | 'rcpt' | 'data' | 'content';

/** The refusing actions: the session records each one it receives. */
export type RefusalAction = 'tempfail' | 'reject' | 'disconnect';

/**
 * A policy check's answer. `continue` means "no opinion"; `accept` ends the stage's checks.
 * Refusals carry the client's reply, the check's name, the reason for the log, and the key the
 * verdict is about (what a later transaction must match to inherit it) with an optional TTL.
 * `headers` (continue/accept only): header fields, without CRLF, for the transaction's message,
 * added above our Received field (e.g. Received-SPF); ignored where there is no transaction.
 * `edits` (continue/accept at the content stage only): what a content check changes; the
 * machine applies them in one place before commit (message/assemble.ts).
 */
export type PolicyVerdict =
  | { action: 'continue'; headers?: readonly string[]; edits?: MessageEdits }
  | { action: 'accept'; headers?: readonly string[]; edits?: MessageEdits }
  | { action: RefusalAction; reply: Reply; check: string; reason: string; key?: string; ttlSeconds?: number };

/** A refusal recorded in the session's verdict log (no reset ever clears it). */
export type VerdictRecord = {
  readonly stage: PolicyStage;
  readonly action: RefusalAction;
  readonly check: string;
  readonly reason: string;
  /** What the verdict is about, as the check defines it (e.g. a recipient); '' for the session. */
  readonly key: string;
  readonly reply: Reply;
  readonly atMs: number;
};
