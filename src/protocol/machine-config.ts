// What the sans-I/O session machine needs to know from the configuration, and nothing else.
// Built by the shell from Config; plain data so core tests can construct it directly.

import type { BodyBudget } from './body-budget.ts';
import type { SessionLimits, TarpitLimits } from './deadlines.ts';
import type { PolicyStage } from './session.ts';

export type MachineConfig = {
  hostname: string;
  maxMessageBytes: number;
  maxCommandLineBytes: number;
  maxTextLineBytes: number;
  maxRecipients: number;
  maxErrors: number;
  maxTransactions: number;
  allowEmptyHelo: boolean;
  vrfy: '252' | 'disabled';
  expn: '252' | 'disabled';
  isNormalizingBareLineEndings: boolean;
  /** Lower-case domains we accept mail for. */
  localDomains: ReadonlySet<string>;
  /** STARTTLS is advertised and honoured only when the shell has a certificate. */
  isTlsAvailable: boolean;
  /** Policy refusals in one session after which it ends with 421 4.7.0. */
  maxPolicyRefusals: number;
  /** Stages at which the machine asks the shell's policy pipeline and waits for a verdict. */
  policyStages: ReadonlySet<PolicyStage>;
  /** A transform step (e.g. DKIM signing) runs on each message before commit. */
  hasTransform?: boolean;
  /** Whether each command line becomes a debug `log` output (the transcript); default true. The
   *  shell turns it off when its log would drop them, so no output is built only to be dropped. */
  logCommands?: boolean;
  /** Content octets a session holds in memory; past them the body goes to its file (default 1 MiB). */
  bodyMemoryBytes?: number;
  /** What every session of this process holds in memory together (the one stateful member: one
   *  per server, shared by its sessions); a body whose reservation does not fit goes to its file
   *  early. Absent: only bodyMemoryBytes bounds each session. */
  bodyBudget?: BodyBudget;
  /** Whether the routing table delivers mail for this address anywhere (`routes` other than
   *  "refuse"); absent: every address is. A recipient it refuses is refused at RCPT, in the
   *  session, rather than accepted and bounced. */
  isRoutable?: (address: string) => boolean;
  /** Time limits the machine judges on every input and `tick` (deadlines.ts); absent: none (the
   *  shell's `timeout` input alone ends idle sessions). */
  limits?: SessionLimits;
  /** Commands that move nothing forward (NOOP, RSET, VRFY, EXPN, HELP) since the last transaction
   *  opened, past which the session ends (421 4.7.0); absent: no cap. */
  maxIdleCommands?: number;
  /** 554 mode (a client refused at connect): the session ends after this many commands or this
   *  long, whichever comes first (limits.refused_session_*); absent: only the other limits. */
  refusedSession?: { maxMs: number; maxCommands: number };
  /** Escalating delay of error replies past the first few (tarpit); absent: none. */
  tarpit?: TarpitLimits;
};

/** Small bodies stay in memory; a larger one streams to its file in the spool as it arrives. */
export const DEFAULT_BODY_MEMORY_BYTES = 1024 * 1024;
