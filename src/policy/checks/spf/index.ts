// The SPF check's builder: on with `spf.enabled`; each result's action from [spf] (pass always
// continues).

import type { CheckBuilder } from '../../check.ts';
import { SPF_DEFAULTS, spfCheck } from './check.ts';

export const build: CheckBuilder = (cfg, ctx) => {
  if (!cfg.spf.enabled) return null;
  const { fail, softfail, neutral, none, temperror, permerror } = cfg.spf;
  return spfCheck({
    dns: ctx.dns(),
    hostname: cfg.smtp.hostname,
    actions: { pass: 'continue', fail, softfail, neutral, none, temperror, permerror },
    header: cfg.spf.header,
    // An SPF evaluation may take up to 10 lookups in a row; never less than two slow ones.
    timeoutMs: Math.max(SPF_DEFAULTS.timeoutMs, 2 * ctx.dnsBudgetMs),
  });
};
