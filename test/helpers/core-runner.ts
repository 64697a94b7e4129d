// Plays a transcript through the sans-I/O core (the shared MachineDriver): no sockets, no timers.
// Commits are answered at once, as a healthy spool would; `@tls` answers the handshake; the
// transcript's @verdict stubs run inside a real PolicyPipeline whose clock is the driver's.

import assert from 'node:assert/strict';
import { machineConfigFrom } from '../../src/server/machine-config.ts';
import { isInNetworks, networkList } from '../../src/server/networks.ts';
import { MachineDriver, TestClock } from './drive.ts';
import { matches, TranscriptPolicy, withoutReceived, type Transcript } from './transcript.ts';

export type CoreRun = { replies: string[]; stored: Buffer[]; closed: boolean };

/** The time between two transcript steps, on top of any @now. */
const STEP_MS = 1000;

/** Splits every send into pieces with `chunker` (default: whole). */
export async function runCore(t: Transcript, chunker: (b: Buffer) => Buffer[] = (b) => [b]): Promise<CoreRun> {
  const clock = new TestClock(Date.UTC(2026, 10, 23, 12, 0, 0));
  const policy = new TranscriptPolicy(t, clock.now);
  const cfg = machineConfigFrom(t.config, {
    isTlsAvailable: t.config.tls.enabled,
    ...(policy.pipeline !== null ? { policyStages: policy.pipeline.stages } : {}),
    maxPolicyRefusals: t.config.verdicts.maxRefusalsPerSession,
  });
  const d = new MachineDriver(cfg, {
    clock,
    peer: t.peer,
    isRelayClient: isInNetworks(networkList(t.config.relay.networks), t.peer),
    sessionId: 'TESTSESSION',
    policy: policy.pipeline?.run ?? 'continue',
    commits: 'accept',
    stepMs: 0,
  });
  await d.settle();
  let cursor = 0;
  for (const step of t.steps) {
    clock.advance(STEP_MS);
    switch (step.kind) {
      case 'send':
        for (const piece of chunker(step.data)) {
          d.send(piece);
          await d.settle();
        }
        break;
      case 'tls':
        d.tlsReady();
        break;
      case 'now':
        clock.advance(step.advanceMs);
        break;
      case 'verdict':
        policy.apply(step);
        break;
      case 'expect': {
        const lines = d.replyLines();
        const got = lines[cursor];
        assert.ok(got !== undefined, `${t.name}:${step.line}: expected "${step.pattern}", got no reply (replies so far: ${JSON.stringify(lines)})`);
        assert.ok(matches(step.pattern, got), `${t.name}:${step.line}: expected "${step.pattern}", got "${got}"`);
        cursor++;
        break;
      }
      case 'closed':
        assert.ok(d.isClosed, `${t.name}:${step.line}: expected the server to close`);
        break;
      case 'spool-count':
        assert.equal(d.stored.length, step.count, `${t.name}:${step.line}: stored messages`);
        break;
      case 'stored':
        assert.equal(withoutReceived(d.stored[d.stored.length - 1].toString('latin1')), step.content, `${t.name}:${step.line}: stored content`);
        break;
    }
  }
  const lines = d.replyLines();
  assert.equal(lines.length, cursor, `${t.name}: unexpected extra replies ${JSON.stringify(lines.slice(cursor))}`);
  return { replies: lines, stored: d.stored, closed: d.isClosed };
}
