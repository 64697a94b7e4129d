// The rspamd check's builder: on when rspamd.url is set; the shared spam check (../spam-check.ts)
// with rspamd's HTTP client and the envelope it sends.

import { rspamdScan } from '../../../filters/rspamd.ts';
import { formatMailbox } from '../../../protocol/address.ts';
import { queueIdFor } from '../../../protocol/session.ts';
import type { CheckBuilder } from '../../check.ts';
import { spamCheck } from '../spam-check.ts';

export const build: CheckBuilder = (cfg, ctx) => {
  const c = cfg.rspamd;
  if (c.url === '') return null;
  const client = { url: c.url, timeoutMs: c.timeoutSeconds * 1000 };
  return spamCheck({
    name: 'rspamd',
    where: c.url,
    scan: (check, message, _content, signal) => {
      const s = check.session;
      const t = check.transaction;
      return rspamdScan(
        client,
        {
          clientAddress: s.peer.address,
          heloName: s.helo?.name ?? null,
          sender: t?.reversePath == null ? '' : formatMailbox(t.reversePath),
          recipients: t?.recipients.map((r) => r.address) ?? [],
          queueId: t === null ? '' : queueIdFor(s.id, t.seq),
          hostname: cfg.smtp.hostname,
          authUser: s.auth?.identity ?? null,
          tls: s.tls,
        },
        message,
        signal,
      );
    },
    thresholds: { addHeaderScore: c.addHeaderScore, tempfailScore: c.tempfailScore, rejectScore: c.rejectScore, useScannerAction: c.useScannerAction },
    onFailure: c.onFailure,
    maxMessageBytes: c.maxMessageBytes,
    timeoutMs: Math.min(110_000, client.timeoutMs + 5_000),
    log: ctx.log,
    metrics: ctx.metrics,
  });
};
