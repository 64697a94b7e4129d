// The verdict a policy check returns, and the record the session keeps of each refusal.
// Types only. A check returns a verdict; only the session machine writes the verdict log.
// STYLE.md "Verdicts and checks".

import type { Reply } from './replies.ts';

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
 * `edits` (continue/accept at the content stage only): what a content check changes.
 */
export type PolicyVerdict =
  | { action: 'continue'; headers?: readonly string[]; edits?: MessageEdits }
  | { action: 'accept'; headers?: readonly string[]; edits?: MessageEdits }
  | { action: RefusalAction; reply: Reply; check: string; reason: string; key?: string; ttlSeconds?: number };

/** One edit of the message's header section (field names compare case-insensitively). */
export type HeaderEdit =
  /** Prepend a field (without CRLF; folded already) above the message's own fields. */
  | { op: 'add'; field: string }
  /** Replace the value of the `index`-th (1-based) field called `name`; the field keeps its place. */
  | { op: 'change'; name: string; index: number; value: string }
  /** Remove the `index`-th (1-based) field called `name`. */
  | { op: 'delete'; name: string; index: number };

/** One edit of the transaction's recipients (addresses as `local@domain`). */
export type RecipientEdit = { op: 'add'; address: string } | { op: 'delete'; address: string };

/**
 * What content checks ask the machine to change before commit; the machine applies the edits of
 * every check of the stage in one place, in order (message/assemble.ts).
 */
export type MessageEdits = {
  readonly headers?: readonly HeaderEdit[];
  readonly recipients?: readonly RecipientEdit[];
  /** Store the message tagged for quarantine (the queue holds it for an operator), e.g. "virus". */
  readonly quarantine?: string;
};

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
