// The DNS-list check's builder: on when [[dnsbl]] tables are present, scored and staged by
// [dnslists].

import type { CheckBuilder } from '../../check.ts';
import { DNSBL_DEFAULTS, dnsblCheck } from './check.ts';

export const build: CheckBuilder = (cfg, ctx) =>
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
        dns: ctx.dns(),
        lookupTimeoutMs: ctx.dnsBudgetMs,
        now: ctx.now,
        log: ctx.log,
      });
