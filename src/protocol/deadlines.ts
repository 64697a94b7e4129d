// The session's time limits as data, judged by the session machine from the `nowMs` of its
// inputs (a `tick` from the shell's timer wheel is one such input): the RFC 5321 idle timeouts,
// the whole-command deadline, the data-phase minimum rate, the session lifetime cap, their
// stress-mode reduction, and the tarpit's escalating delay. Pure: no clock, no timer.
// RFC 5321 4.5.3.2 (the per-command timeouts stay the ceiling; these only cut sooner).

/** The connection-defense rules the machine itself fires (a subset of defense/events.ts's). */
export type MachineDefenseRule = 'refused_session_closed' | 'command_deadline' | 'min_data_rate' | 'session_max' | 'idle_commands' | 'tarpit' | 'tarpit_disconnect';

export type SessionLimits = {
  /** RFC 5321 4.5.3.2.7: between commands, and between reads of a command (smtp.command_timeout_seconds). */
  commandTimeoutMs: number;
  /** RFC 5321 4.5.3.2.5-6: between reads of the data (smtp.data_timeout_seconds). */
  dataTimeoutMs: number;
  /** A command line must be complete this long after its first octet (limits.command_deadline_seconds); 0 = off. */
  commandDeadlineMs: number;
  /** During DATA/BDAT, at least this many octets per window (limits.min_data_rate_bytes); 0 = off. */
  minDataRateBytes: number;
  minDataRateWindowMs: number;
  /** Whole session (limits.session_max_seconds); 0 = off. */
  sessionMaxMs: number;
  /** Under stress every timeout and the command deadline are at most this (limits.stress_timeout_seconds). */
  stressTimeoutMs: number;
};

export type TarpitLimits = {
  /** Errors (and refused recipients) in a session answered without delay. */
  freeErrors: number;
  /** The first delayed reply waits this long; each next one twice as long, up to maxDelayMs. */
  initialDelayMs: number;
  maxDelayMs: number;
};

/** The delay for the session's `errors`-th error (counting those a remembered tarpit adds); 0 = none. */
export function tarpitDelayMs(t: TarpitLimits, errors: number): number {
  const n = errors - t.freeErrors;
  if (n <= 0 || t.initialDelayMs <= 0) return 0;
  // 2^(n-1) capped before it can overflow.
  return Math.min(t.maxDelayMs, t.initialDelayMs * 2 ** Math.min(n - 1, 30));
}
