// The authentication check's builder: on with `dkim.enabled` or `dmarc.enabled`; ARC with
// `arc.enabled`; DMARC enforcement with `dmarc.enforce`.

import type { CheckBuilder } from '../../check.ts';
import { authenticationCheck } from './check.ts';

export const build: CheckBuilder = (cfg, ctx) => {
  if (!cfg.dkim.enabled && !cfg.dmarc.enabled) return null;
  return authenticationCheck({
    dns: ctx.dns().options,
    hostname: cfg.smtp.hostname,
    isArc: cfg.arc.enabled,
    isDmarc: cfg.dmarc.enabled,
    isEnforcing: cfg.dmarc.enabled && cfg.dmarc.enforce,
    quarantineAction: cfg.dmarc.quarantineAction,
    // The SPF check's result is read from the field it adds; with no field, SPF is evaluated here.
    isSpfChecked: cfg.spf.enabled && cfg.spf.header !== 'none' && cfg.policy.checks.includes('spf'),
    // Key lookups per signature, the ARC chain, the DMARC record (and SPF when the check is off):
    // a few lookups in a row; never less than three slow ones.
    timeoutMs: Math.max(10_000, 3 * ctx.dnsBudgetMs),
  });
};
