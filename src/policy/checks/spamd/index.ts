// The spamd check's builder: on when spamd.address is set; the shared spam check (../spam-check.ts)
// with spamd's client.

import { spamdScan } from '../../../filters/spamd.ts';
import { formatEndpoint } from '../../../net/endpoint.ts';
import type { CheckBuilder } from '../../check.ts';
import { spamCheck } from '../spam-check.ts';

export const build: CheckBuilder = (cfg, ctx) => {
  const c = cfg.spamd;
  const address = c.address;
  if (address === null) return null;
  const client = { address, connectTimeoutMs: c.connectTimeoutSeconds * 1000, commandTimeoutMs: c.commandTimeoutSeconds * 1000 };
  return spamCheck({
    name: 'spamd',
    where: formatEndpoint(address),
    scan: (_ctx, message, _content, signal) => spamdScan(client, message, signal),
    thresholds: { addHeaderScore: c.addHeaderScore, tempfailScore: c.tempfailScore, rejectScore: c.rejectScore, useScannerAction: false },
    onFailure: c.onFailure,
    maxMessageBytes: c.maxMessageBytes,
    timeoutMs: Math.min(110_000, client.connectTimeoutMs + 2 * client.commandTimeoutMs + 5_000),
    log: ctx.log,
    metrics: ctx.metrics,
  });
};
