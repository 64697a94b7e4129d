// The HELO/EHLO name check's builder: on when any [helo] option is; our names are
// smtp.hostname and the local domains.

import type { CheckBuilder } from '../../check.ts';
import { heloCheck } from './check.ts';

export const build: CheckBuilder = (cfg, ctx) => {
  const { requireFqdn, requireResolvable, rejectOurName } = cfg.helo;
  if (!requireFqdn && !requireResolvable && !rejectOurName) return null;
  return heloCheck({ requireFqdn, requireResolvable, rejectOurName, ourNames: [cfg.smtp.hostname, ...cfg.domains.local], dns: ctx.dns(), timeoutMs: ctx.dnsBudgetMs });
};
