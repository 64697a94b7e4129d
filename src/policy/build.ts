// Builds the policy pipeline from the configuration: which checks run, in which order
// (`policy.checks`), each by its own builder (checks/<name>/index.ts) from its own section. Returns null when no check is configured, so the
// session machine skips every round trip. Owns the DNS client the checks share (one per worker).

import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import { createDnsClient, type DnsClient } from '../dns/resolver.ts';
import type { PolicyStage } from '../protocol/session.ts';
import type { StateStore } from '../store/store.ts';
import type { Check, CheckBuilder } from './check.ts';
import { buildBatv } from './checks/batv/index.ts';
import { buildDnsbl } from './checks/dnsbl/index.ts';
import { buildGreylist } from './checks/greylist/index.ts';
import { buildHelo } from './checks/helo/index.ts';
import { buildRecipients } from './checks/recipients/index.ts';
import { buildSpf } from './checks/spf/index.ts';
import { PolicyPipeline } from './pipeline.ts';
import type { PolicyCheckName } from './registry.ts';

/** Each registered check's builder, by name: the compiler refuses a registry name left out. */
const BUILDERS: Record<PolicyCheckName, CheckBuilder> = {
  recipients: buildRecipients,
  helo: buildHelo,
  dnsbl: buildDnsbl,
  spf: buildSpf,
  greylist: buildGreylist,
  batv: buildBatv,
};

const DEFAULT_CHECK_TIMEOUT_MS = 10_000;

export type PipelineHooks = {
  /** Called for every verdict a check decides (metrics). */
  onVerdict?: (check: string, stage: PolicyStage, action: string) => void;
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
