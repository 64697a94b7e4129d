// Builds the policy pipeline from the configuration: which checks run, in which order
// (`policy.checks`), each by its own builder (checks/<name>/index.ts) from its own section. Returns null when no check is configured, so the
// session machine skips every round trip. Owns the DNS client the checks share (one per worker).

import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import { createDnsClient, type DnsClient } from '../dns/resolver.ts';
import type { FilterMetrics } from '../obs/metrics.ts';
import type { PolicyStage } from '../protocol/session.ts';
import type { StateStore } from '../store/store.ts';
import type { Check, CheckBuilder } from './check.ts';
import { PolicyPipeline } from './pipeline.ts';
import { POLICY_CHECK_NAMES, type PolicyCheckName } from './registry.ts';

/** Each registered check's builder, by name, from its directory's index.ts (`build`): the
 *  registry is the one list, so adding a check touches its directory and one line there. Loaded
 *  once, when this module is (top-level await), so buildPipeline stays synchronous; a check
 *  whose index.ts does not export a builder stops the start with its name. */
const BUILDERS: Record<PolicyCheckName, CheckBuilder> = Object.fromEntries(
  await Promise.all(
    POLICY_CHECK_NAMES.map(async (name) => {
      const mod = (await import(`./checks/${name}/index.ts`)) as { build?: unknown };
      if (typeof mod.build !== 'function') throw new Error(`policy check "${name}": src/policy/checks/${name}/index.ts exports no build()`);
      return [name, mod.build as CheckBuilder] as const;
    }),
  ),
) as Record<PolicyCheckName, CheckBuilder>;

const DEFAULT_CHECK_TIMEOUT_MS = 10_000;

export type PipelineHooks = {
  /** Called for every verdict a check decides (metrics). */
  onVerdict?: (check: string, stage: PolicyStage, action: string) => void;
  /** The content scanners' counters (clamd, spamd, rspamd). */
  filterMetrics?: FilterMetrics;
  /** A DNS client to use instead of one built from `dns` (tests). */
  dns?: DnsClient;
  now?: () => number;
};

export function buildPipeline(cfg: Config, log: Logger, store: StateStore | null = null, hooks: PipelineHooks = {}): PolicyPipeline | null {
  const now = hooks.now ?? Date.now;
  let dns = hooks.dns ?? null;
  const dnsClient = (): DnsClient => (dns ??= createDnsClient({ servers: cfg.dns.servers, timeoutMs: cfg.dns.timeoutMs, tries: cfg.dns.tries }));
  // One query's worst case: every try times out, each waiting twice as long as the one before
  // (c-ares; measured: 500 ms x 3 tries gives up after 4 s); a little slack so the resolver's own
  // "timed out" answers first. The loader keeps timeout x 2^tries <= 30 s, so every check's budget
  // (SPF: two of these) stays within the connection's 120 s limit on any action.
  const dnsBudgetMs = cfg.dns.timeoutMs * 2 ** cfg.dns.tries + 500;
  const ctx = {
    dns: dnsClient,
    dnsBudgetMs,
    store: (what: string): StateStore => {
      if (store === null) throw new Error(`${what} needs a state store`);
      return store;
    },
    now,
    log,
    metrics: hooks.filterMetrics ?? null,
  };
  const checks = cfg.policy.checks.map((name) => BUILDERS[name](cfg, ctx)).filter((c): c is Check => c !== null);
  if (checks.length === 0) return null;
  return new PolicyPipeline(checks, {
    log,
    defaultTimeoutMs: DEFAULT_CHECK_TIMEOUT_MS,
    store,
    now,
    prefixes: { ipv4: cfg.verdicts.ipv4Prefix, ipv6: cfg.verdicts.ipv6Prefix },
    ...(hooks.onVerdict !== undefined ? { onVerdict: hooks.onVerdict } : {}),
  });
}
