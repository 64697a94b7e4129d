// The reset table: what each session event does to the transaction and to each part of the
// session's security state, as data, and the one function that applies it. Nothing else in the
// machine drops a transaction or touches the HELO identity, TLS or auth state.
// RFC 5321 4.1.1.5 (RSET), 4.1.4 (EHLO resets; a refused command changes nothing),
// RFC 3207 4.2 (after TLS the server forgets what the client said before it).
//
// Security: no row clears the counters or the verdict log. A refusal belongs to the session;
// if RSET, EHLO or STARTTLS could clear it, a client could launder a greylist or block-list
// verdict (and reset max_transactions) by issuing them. Tests check every cell of this table
// with a non-empty verdict log and non-zero counters.

import type { HeloIdentity, SessionSecurity, TlsState, TransactionSlot } from './session.ts';

export type ResetRule = {
  readonly transaction: 'drop' | 'keep';
  readonly helo: 'keep' | 'replace' | 'clear';
  readonly tls: 'keep' | 'set';
  readonly auth: 'keep' | 'clear';
  readonly counters: 'keep';
  readonly verdicts: 'keep';
};

export const RESET_RULES = {
  /** RSET. */
  rset: { transaction: 'drop', helo: 'keep', tls: 'keep', auth: 'keep', counters: 'keep', verdicts: 'keep' },
  /** The end of a message, whatever the reply (250, a refusal, a failed commit). */
  endOfData: { transaction: 'drop', helo: 'keep', tls: 'keep', auth: 'keep', counters: 'keep', verdicts: 'keep' },
  /** An accepted HELO/EHLO. */
  ehlo: { transaction: 'drop', helo: 'replace', tls: 'keep', auth: 'keep', counters: 'keep', verdicts: 'keep' },
  /** A refused HELO/EHLO (syntax or policy): RFC 5321 4.1.4, the state stays as it was. */
  ehloRefused: { transaction: 'keep', helo: 'keep', tls: 'keep', auth: 'keep', counters: 'keep', verdicts: 'keep' },
  /** The STARTTLS handshake completed. */
  tlsReady: { transaction: 'drop', helo: 'clear', tls: 'set', auth: 'clear', counters: 'keep', verdicts: 'keep' },
} as const satisfies Record<string, ResetRule>;

export type ResetEvent = keyof typeof RESET_RULES;

/** What a `replace` or `set` cell sets. */
export type ResetChange = { helo?: HeloIdentity; tls?: TlsState };

/** Applies `event`'s row to the session and returns the transaction slot that follows it. */
export function applyReset(event: ResetEvent, session: SessionSecurity, slot: TransactionSlot, change: ResetChange = {}): TransactionSlot {
  const rule: ResetRule = RESET_RULES[event];
  switch (rule.helo) {
    case 'keep':
      break;
    case 'replace':
      if (change.helo === undefined) throw new Error(`reset ${event}: no HELO identity given`);
      session.helo = change.helo;
      break;
    case 'clear':
      session.helo = null;
      break;
  }
  if (rule.tls === 'set') {
    if (change.tls === undefined) throw new Error(`reset ${event}: no TLS state given`);
    session.tls = change.tls;
  }
  if (rule.auth === 'clear') session.auth = null;
  return rule.transaction === 'drop' ? null : slot;
}
