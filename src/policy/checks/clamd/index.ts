// The clamd check's builder: on when clamd.address is set.

import type { CheckBuilder } from '../../check.ts';
import { clamdCheck } from './check.ts';

export const build: CheckBuilder = (cfg, ctx) => {
  const c = cfg.clamd;
  if (c.address === null) return null;
  return clamdCheck({
    address: c.address,
    connectTimeoutMs: c.connectTimeoutSeconds * 1000,
    commandTimeoutMs: c.commandTimeoutSeconds * 1000,
    maxStreamBytes: c.streamMaxBytes,
    onFailure: c.onFailure,
    rememberSeconds: c.rememberSeconds,
    log: ctx.log,
    metrics: ctx.metrics,
  });
};
