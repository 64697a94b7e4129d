// Greylisting's builder: on with `greylist.enabled`; needs the state store.

import type { CheckBuilder } from '../../check.ts';
import { GREYLIST_DEFAULTS, greylistCheck } from './check.ts';

export const build: CheckBuilder = (cfg, ctx) =>
  cfg.greylist.enabled
    ? greylistCheck({ store: ctx.store('greylist.enabled'), stage: cfg.greylist.stage, ...GREYLIST_DEFAULTS, delaySeconds: cfg.greylist.delaySeconds, now: ctx.now })
    : null;
