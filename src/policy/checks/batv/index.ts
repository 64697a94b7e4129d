// BATV's builder: on when `batv.domains` is set; reads the key files once, at build (start).

import { batvPolicy, loadBatvKeys } from '../../../delivery/batv.ts';
import type { CheckBuilder } from '../../check.ts';
import { batvCheck } from './check.ts';

export const build: CheckBuilder = (cfg, ctx) =>
  cfg.batv.domains.length === 0
    ? null
    : batvCheck({ policy: batvPolicy(cfg.batv, loadBatvKeys(cfg.batv.keys)), action: cfg.batv.action, now: ctx.now, log: ctx.log });
