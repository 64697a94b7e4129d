// The clamd check: at the content stage, every message (each of a session's, whatever RSET or
// pipelining did in between) is sent to clamd as it will be stored, and a virus refuses it with
// 554 5.7.1 naming nothing (the signature goes to the log and portcullis_virus_found_total). A
// message over the stream limit, or clamd down, slow or speaking garbage, gets on_failure: never
// a silent pass. A virus refusal carries a TTL, so the pipeline keeps it in verdict memory for
// the client's network (`portcullis verdicts list`); its key is the message, so nothing else is
// refused by it. docs/filters.md "ClamAV".

import type { Logger } from 'pino';
import { clamdScan, type ClamdOptions, type ClamdResult } from '../../../filters/clamd.ts';
import { messageBytes } from '../../../filters/message-bytes.ts';
import { formatEndpoint } from '../../../net/endpoint.ts';
import type { FilterMetrics } from '../../../obs/metrics.ts';
import { REPLY } from '../../../protocol/replies.ts';
import { queueIdFor } from '../../../protocol/session.ts';
import type { PolicyVerdict } from '../../../protocol/verdict.ts';
import type { Check, CheckContext } from '../../check.ts';

export type ClamdCheckOptions = ClamdOptions & {
  readonly onFailure: 'tempfail' | 'accept';
  /** 0: a virus refusal is not kept in verdict memory. */
  readonly rememberSeconds: number;
  readonly log: Logger;
  readonly metrics: FilterMetrics | null;
};

const CONTINUE: PolicyVerdict = { action: 'continue' };

export function clamdCheck(opts: ClamdCheckOptions): Check {
  const where = formatEndpoint(opts.address);
  const failed = (ctx: CheckContext, result: ClamdResult & { kind: 'too-large' | 'error' }): PolicyVerdict => {
    const queueId = ctx.transaction === null ? undefined : queueIdFor(ctx.session.id, ctx.transaction.seq);
    opts.metrics?.contentFilterResult('clamd', result.kind === 'too-large' ? 'too_large' : 'failed');
    const code = result.kind === 'too-large' ? 'too-large' : result.code;
    opts.log.warn({ sid: ctx.session.id, queueId, clamd: where, code, reason: result.reason, onFailure: opts.onFailure }, result.kind === 'too-large' ? 'clamd: message not scanned, too large' : 'clamd failed');
    if (opts.onFailure === 'accept') return CONTINUE;
    return {
      action: 'tempfail',
      reply: result.kind === 'too-large' ? REPLY.tooLargeToScan : REPLY.scannerUnavailable,
      check: 'clamd',
      reason: `clamd ${code}: ${result.reason}`,
    };
  };

  const run = async (ctx: CheckContext, signal: AbortSignal): Promise<PolicyVerdict> => {
    if (ctx.message === null) return CONTINUE;
    const result = await clamdScan(opts, messageBytes(ctx.message), signal);
    switch (result.kind) {
      case 'clean':
        opts.metrics?.contentFilterResult('clamd', 'clean');
        return CONTINUE;
      case 'virus': {
        opts.metrics?.contentFilterResult('clamd', 'reject');
        opts.metrics?.virusFound('clamd');
        const queueId = ctx.transaction === null ? undefined : queueIdFor(ctx.session.id, ctx.transaction.seq);
        opts.log.warn({ sid: ctx.session.id, queueId, client: ctx.session.peer.address, clamd: where, signature: result.signature }, 'clamd: virus found, message refused');
        return {
          action: 'reject',
          reply: REPLY.contentRejected,
          check: 'clamd',
          reason: `virus ${result.signature}`,
          ...(opts.rememberSeconds > 0 ? { ttlSeconds: opts.rememberSeconds } : {}),
        };
      }
      case 'too-large':
      case 'error':
        return failed(ctx, result);
    }
  };

  return {
    name: 'clamd',
    stages: ['content'],
    // Connecting, sending (each part within the command timeout) and the verdict; the client's
    // own timeouts answer first, this is the pipeline's backstop, under the connection's 120 s.
    timeoutMs: Math.min(110_000, opts.connectTimeoutMs + 2 * opts.commandTimeoutMs + 5_000),
    onTimeout: opts.onFailure === 'accept' ? CONTINUE : { action: 'tempfail', reply: REPLY.scannerUnavailable, check: 'clamd', reason: 'clamd scan timed out' },
    // The message itself: a refusal says nothing about the session's next message.
    key: (ctx) => `message:${ctx.transaction === null ? '' : queueIdFor(ctx.session.id, ctx.transaction.seq)}`,
    ...(opts.rememberSeconds > 0 ? { memoryScope: 'network' as const } : {}),
    run,
  };
}
