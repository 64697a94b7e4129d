// Builds the policy pipeline from the configuration: which checks run, in which order
// (`policy.checks`), each from its own section. Returns null when no check is configured, so the
// session machine skips every round trip. Owns the DNS client the checks share (one per worker).

import type { Logger } from 'pino';
import type { Config, PolicyCheckName } from '../config/types.ts';
import { createDnsClient, type DnsClient } from '../dns/resolver.ts';
import type { PolicyStage } from '../protocol/session.ts';
import type { StateStore } from '../store/store.ts';
import type { Check } from './check.ts';
import { DNSBL_DEFAULTS, dnsblCheck } from './checks/dnsbl.ts';
import { GREYLIST_DEFAULTS, greylistCheck } from './checks/greylist.ts';
import { heloCheck } from './checks/helo.ts';
import { loadRecipientTable, recipientsCheck } from './checks/recipients.ts';
import { SPF_DEFAULTS, spfCheck } from './checks/spf.ts';
import { PolicyPipeline } from './pipeline.ts';

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
  const needStore = (what: string): StateStore => {
    if (store === null) throw new Error(`${what} needs a state store`);
    return store;
  };
  const builders: Record<PolicyCheckName, () => Check | null> = {
    recipients: () => {
      const { table, addresses } = cfg.recipients;
      if (table === '' && addresses.length === 0) return null;
      const localDomains = new Set(cfg.domains.local.map((d) => d.toLowerCase()));
      // The TOML entries are already validated (and lowercased): used as they are, not re-parsed
      // as file lines ('#' is a comment in the file, a valid local-part character here).
      const fromFile = table === '' ? null : loadRecipientTable(table);
      return recipientsCheck(
        {
          addresses: new Set([...addresses.filter((a) => !a.startsWith('@')), ...(fromFile?.addresses ?? [])]),
          catchAllDomains: new Set([...addresses.filter((a) => a.startsWith('@')).map((a) => a.slice(1)), ...(fromFile?.catchAllDomains ?? [])]),
        },
        localDomains,
      );
    },
    helo: () => {
      const { requireFqdn, requireResolvable, rejectOurName } = cfg.helo;
      if (!requireFqdn && !requireResolvable && !rejectOurName) return null;
      return heloCheck({ requireFqdn, requireResolvable, rejectOurName, ourNames: [cfg.smtp.hostname, ...cfg.domains.local], dns: dnsClient(), timeoutMs: dnsBudgetMs });
    },
    dnsbl: () =>
      cfg.dnsbl.length === 0
        ? null
        : dnsblCheck({
            ...DNSBL_DEFAULTS,
            lists: cfg.dnsbl,
            threshold: cfg.dnslists.threshold,
            ...(cfg.dnslists.allowThreshold !== null ? { allowThreshold: cfg.dnslists.allowThreshold } : {}),
            stage: cfg.dnslists.stage,
            action: cfg.dnslists.action,
            negativeCacheSeconds: cfg.dnslists.negativeCacheSeconds,
            dns: dnsClient(),
            lookupTimeoutMs: dnsBudgetMs,
            now,
            log,
          }),
    spf: () => {
      if (!cfg.spf.enabled) return null;
      const { fail, softfail, neutral, none, temperror, permerror } = cfg.spf;
      return spfCheck({
        dns: dnsClient(),
        hostname: cfg.smtp.hostname,
        actions: { pass: 'continue', fail, softfail, neutral, none, temperror, permerror },
        header: cfg.spf.header,
        // An SPF evaluation may take up to 10 lookups in a row; never less than two slow ones.
        timeoutMs: Math.max(SPF_DEFAULTS.timeoutMs, 2 * dnsBudgetMs),
      });
    },
    greylist: () =>
      cfg.greylist.enabled
        ? greylistCheck({ store: needStore('greylist.enabled'), stage: cfg.greylist.stage, ...GREYLIST_DEFAULTS, delaySeconds: cfg.greylist.delaySeconds, now })
        : null,
  };
  const checks = cfg.policy.checks.map((name) => builders[name]()).filter((c): c is Check => c !== null);
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
