// The contract every policy check implements, and what a check may see.
// A check never writes session state: it returns a verdict; only the pipeline (through the
// session machine) records verdicts. STYLE.md "Verdicts and checks".

import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import type { DnsClient } from '../dns/resolver.ts';
import type { ContentMessage } from '../message/content.ts';
import type { FilterMetrics } from '../obs/metrics.ts';
import type { RecipientView, SessionView, TransactionView } from '../protocol/session.ts';
import type { PolicyStage, PolicyVerdict } from '../protocol/verdict.ts';
import type { StateStore } from '../store/store.ts';

export type CheckContext = {
  readonly stage: PolicyStage;
  /** Read-only all the way down: a check cannot write the verdict log or the recipients. */
  readonly session: SessionView;
  readonly transaction: TransactionView | null;
  /** Set at the rcpt stage: the recipient being checked. */
  readonly recipient: RecipientView | null;
  /** The HELO/EHLO name: at the helo stage the one being announced (not yet the session's). */
  readonly heloName: string | null;
  /** At the content stage: the assembled message (header fields, body stream); null elsewhere. */
  readonly message: ContentMessage | null;
  readonly nowMs: number;
};

export type Check = {
  readonly name: string;
  readonly stages: readonly PolicyStage[];
  /** Time budget for one run; the pipeline's default when absent. */
  readonly timeoutMs?: number;
  /** The verdict when the budget runs out (default: tempfail 451 4.4.3). */
  readonly onTimeout?: PolicyVerdict;
  /**
   * What a verdict of this check is about, for verdict memory: a later transaction in the same
   * session whose key matches gets the remembered refusal again without the check running.
   * Default: the recipient at the rcpt stage, the one message at the content stage (nothing is
   * inherited), '' (the whole session) elsewhere.
   */
  key?(ctx: CheckContext): string;
  /**
   * Whether, and for which client addresses, a refusal with a TTL is remembered across sessions
   * (in the state store): `network` (verdicts.ipv4_prefix / ipv6_prefix, default /24 and /64) or
   * `host` (the one address, /32 or /128: a DNS list names an address, not its neighbours).
   * Absent: refusals live in the session only, `ttlSeconds` is ignored, and the check costs no
   * store lookup (greylisting, SPF and the recipient table never remember by network).
   */
  readonly memoryScope?: 'host' | 'network';
  /**
   * The verdict, synchronously when the check can (from its cache: then the stage costs no promise
   * and no timer), else a promise the pipeline bounds by `timeoutMs`. `signal` aborts when that
   * budget runs out; it means something only while the answer is pending, so a check that answers
   * synchronously must not keep it (the pipeline hands an unused signal to the next check).
   */
  run(ctx: CheckContext, signal: AbortSignal): Promise<PolicyVerdict> | PolicyVerdict;
  /**
   * The session `sessionId` has ended (its connection is gone): a check that holds something per
   * session (a milter's connection) lets it go here. Called once per session, for every check,
   * whatever stages ran; never throws into the caller (the pipeline catches and logs).
   */
  sessionClosed?(sessionId: string): void;
};

/** What a check's builder (checks/<name>/index.ts) gets besides the configuration. */
export type BuildContext = {
  /** The DNS client the checks share (made on first use, so a configuration without DNS checks builds none). */
  dns(): DnsClient;
  /** The budget of one DNS query that gets no answer: every try times out (see build.ts). */
  readonly dnsBudgetMs: number;
  /** The state store; throws for a check that needs one when none is open (`what` names the key). */
  store(what: string): StateStore;
  now(): number;
  readonly log: Logger;
  /** Where the content scanners count their results; null: nothing is counted. */
  readonly metrics: FilterMetrics | null;
};

/** A check's builder: the check as the configuration asks for it, or null when its sections leave it off. */
export type CheckBuilder = (cfg: Config, ctx: BuildContext) => Check | null;
