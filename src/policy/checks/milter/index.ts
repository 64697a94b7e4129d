// The milter check's builder: on when [[milter]] tables are present; one check runs the chain.

import type { CheckBuilder } from '../../check.ts';
import { milterCheck } from './check.ts';

export const build: CheckBuilder = (cfg, ctx) =>
  cfg.milter.length === 0
    ? null
    : milterCheck({
        milters: cfg.milter.map((m) => ({ address: m.address, onFailure: m.onFailure, connectTimeoutMs: m.connectTimeoutSeconds * 1000, commandTimeoutMs: m.commandTimeoutSeconds * 1000 })),
        hostname: cfg.smtp.hostname,
        maxBodyBytes: cfg.smtp.maxMessageBytes,
        log: ctx.log,
      });
