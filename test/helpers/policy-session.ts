// Drives one session through the sans-I/O machine and a policy pipeline the way the connection
// does (verdicts and commits answered in order), for policy tests. No sockets.

import { defaultConfig } from '../../src/config/types.ts';
import type { PolicyPipeline } from '../../src/policy/pipeline.ts';
import { SmtpMachine, type Output } from '../../src/protocol/machine.ts';
import { formatReply } from '../../src/protocol/replies.ts';
import { machineConfigFrom } from '../../src/server/machine-config.ts';

export type PolicySessionOptions = {
  /** Client address (default 192.0.2.5). */
  address?: string;
  maxRefusals?: number;
  nowMs?: () => number;
};

/** Plays `input` from a fresh connection; returns the last line of every reply, greeting included. */
export async function policySession(pipeline: PolicyPipeline, input: string, opts: PolicySessionOptions = {}): Promise<string[]> {
  const now = opts.nowMs ?? (() => 0);
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  const m = new SmtpMachine(
    machineConfigFrom(cfg, { isTlsAvailable: false, policyStages: pipeline.stages, maxPolicyRefusals: opts.maxRefusals ?? 3 }),
  );
  const replies: string[] = [];
  const handle = async (outs: Output[]): Promise<void> => {
    for (const o of outs) {
      if (o.type === 'reply') replies.push(formatReply(o.reply).trimEnd().split('\r\n').pop()!);
      else if (o.type === 'commit') await handle(m.step({ type: 'committed', nowMs: now() }));
      else if (o.type === 'policy') await handle(m.step({ type: 'verdict', nowMs: now(), verdict: await pipeline.run(o) }));
    }
  };
  const peer = { address: opts.address ?? '192.0.2.5', port: 1 };
  await handle(m.step({ type: 'connected', nowMs: now(), sessionId: 'S', peer, local: { address: '127.0.0.1', port: 25 }, isRelayClient: false, isTls: false }));
  await handle(m.step({ type: 'bytes', nowMs: now(), data: Buffer.from(input) }));
  return replies;
}
