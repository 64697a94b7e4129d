// Builds the policy pipeline from the configuration: which checks run, in which order.
// Returns null when no check is configured, so the session machine skips every round trip.

import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import type { StateStore } from '../store/store.ts';
import type { Check } from './check.ts';
import { GREYLIST_DEFAULTS, greylistCheck } from './checks/greylist.ts';
import { loadRecipientTable, recipientsCheck } from './checks/recipients.ts';
import { PolicyPipeline } from './pipeline.ts';

const DEFAULT_CHECK_TIMEOUT_MS = 10_000;

export function buildPipeline(cfg: Config, log: Logger, store: StateStore | null = null): PolicyPipeline | null {
  const checks: Check[] = [];
  if (cfg.recipients.table !== '') {
    const localDomains = new Set(cfg.domains.local.map((d) => d.toLowerCase()));
    checks.push(recipientsCheck(loadRecipientTable(cfg.recipients.table), localDomains));
  }
  if (cfg.greylist.enabled) {
    if (store === null) throw new Error('greylist.enabled needs a state store');
    checks.push(
      greylistCheck({ store, stage: cfg.greylist.stage, ...GREYLIST_DEFAULTS, delaySeconds: cfg.greylist.delaySeconds, now: Date.now }),
    );
  }
  return checks.length === 0 ? null : new PolicyPipeline(checks, { log, defaultTimeoutMs: DEFAULT_CHECK_TIMEOUT_MS, store });
}
