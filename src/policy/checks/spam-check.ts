// What the spam scanner checks (spamd, rspamd) share: at the content stage, a message within the
// scanner's size limit is scored, the score (or the scanner's own action) becomes clean, tagged,
// tempfail or reject (filters/spam-verdict.ts), accepted mail gets the X-Spam-* fields through
// the content stage's edits, and a scanner that is down, slow or speaks garbage gets on_failure.
// The client sees generic text; the score and the rules go to the log. Each scanner's own check
// (checks/spamd, checks/rspamd) supplies its client. docs/filters.md "SpamAssassin", "rspamd".

import type { Logger } from 'pino';
import { messageBytes, type MessageBytes } from '../../filters/message-bytes.ts';
import { decide, spamHeaderEdits, spamSummary, type SpamFinding, type SpamThresholds } from '../../filters/spam-verdict.ts';
import type { ContentMessage } from '../../message/content.ts';
import type { ContentFilter, FilterMetrics } from '../../obs/metrics.ts';
import { REPLY } from '../../protocol/replies.ts';
import { queueIdFor } from '../../protocol/session.ts';
import type { PolicyVerdict } from '../../protocol/verdict.ts';
import type { Check, CheckContext } from '../check.ts';

export type ScanOutcome = ({ readonly kind: 'scored' } & SpamFinding) | { readonly kind: 'error'; readonly code: string; readonly reason: string };

export type SpamCheckOptions = {
  readonly name: ContentFilter;
  /** The scanner's address, for the log. */
  readonly where: string;
  readonly scan: (ctx: CheckContext, message: MessageBytes, content: ContentMessage, signal: AbortSignal) => Promise<ScanOutcome>;
  readonly thresholds: SpamThresholds;
  readonly onFailure: 'tempfail' | 'accept';
  /** Larger messages are not scanned and pass (spam is small; scanners are slow on large mail). */
  readonly maxMessageBytes: number;
  /** The pipeline's backstop, above the client's own timeouts. */
  readonly timeoutMs: number;
  readonly log: Logger;
  readonly metrics: FilterMetrics | null;
};

const CONTINUE: PolicyVerdict = { action: 'continue' };

export function spamCheck(opts: SpamCheckOptions): Check {
  const { name, where } = opts;
  const run = async (ctx: CheckContext, signal: AbortSignal): Promise<PolicyVerdict> => {
    const content = ctx.message;
    if (content === null) return CONTINUE;
    const queueId = ctx.transaction === null ? undefined : queueIdFor(ctx.session.id, ctx.transaction.seq);
    if (content.size > opts.maxMessageBytes) {
      opts.metrics?.contentFilterResult(name, 'too_large');
      opts.log.info({ sid: ctx.session.id, queueId, [name]: where, bytes: content.size, maxMessageBytes: opts.maxMessageBytes }, `${name}: message not scanned, over max_message_bytes`);
      return CONTINUE;
    }
    const outcome = await opts.scan(ctx, messageBytes(content), content, signal);
    if (outcome.kind === 'error') {
      opts.metrics?.contentFilterResult(name, 'failed');
      opts.log.warn({ sid: ctx.session.id, queueId, [name]: where, code: outcome.code, reason: outcome.reason, onFailure: opts.onFailure }, `${name} failed`);
      if (opts.onFailure === 'accept') return CONTINUE;
      return { action: 'tempfail', reply: REPLY.scannerUnavailable, check: name, reason: `${name} ${outcome.code}: ${outcome.reason}` };
    }
    const decision = decide(outcome, opts.thresholds);
    opts.metrics?.contentFilterResult(name, decision);
    const summary = spamSummary(name, outcome, decision);
    const fields = { sid: ctx.session.id, queueId, [name]: where, score: outcome.score, action: outcome.action, decision, symbols: outcome.symbols.slice(0, 50).join(',') };
    if (decision === 'reject' || decision === 'tempfail') {
      opts.log.info(fields, `${name}: spam refused`);
      return { action: decision, reply: decision === 'reject' ? REPLY.contentRejected : REPLY.contentTempfailed, check: name, reason: summary };
    }
    opts.log.debug(fields, `${name}: scanned`);
    return { action: 'continue', edits: { headers: spamHeaderEdits(content.fields, outcome, decision, opts.thresholds, name) } };
  };
  return {
    name,
    stages: ['content'],
    timeoutMs: opts.timeoutMs,
    onTimeout: opts.onFailure === 'accept' ? CONTINUE : { action: 'tempfail', reply: REPLY.scannerUnavailable, check: name, reason: `${name} scan timed out` },
    run,
  };
}
