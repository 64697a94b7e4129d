// Plays a transcript through the sans-I/O core: no sockets, no timers. The commit and TLS
// actions are answered at once, as a healthy spool and a successful handshake would.

import assert from 'node:assert/strict';
import { SmtpMachine, type Output } from '../../src/protocol/machine.ts';
import { formatReply } from '../../src/protocol/replies.ts';
import { machineConfigFrom } from '../../src/server/machine-config.ts';
import { isInNetworks, networkList } from '../../src/server/networks.ts';
import { matches, withoutReceived, type Transcript } from './transcript.ts';

export type CoreRun = { replies: string[]; stored: Buffer[]; closed: boolean };

/** Splits `chunk` into pieces: every send goes through `chunker` (default: whole). */
export function runCore(t: Transcript, chunker: (b: Buffer) => Buffer[] = (b) => [b]): CoreRun {
  const cfg = machineConfigFrom(t.config, { isTlsAvailable: t.config.tls.enabled });
  const m = new SmtpMachine(cfg);
  const replyLines: string[] = [];
  const stored: Buffer[] = [];
  let closed = false;
  let now = Date.UTC(2026, 10, 23, 12, 0, 0);
  const handle = (outs: Output[]): void => {
    const queue = [...outs];
    while (queue.length > 0) {
      const o = queue.shift()!;
      if (o.type === 'reply') replyLines.push(...formatReply(o.reply).split('\r\n').filter((l) => l !== ''));
      else if (o.type === 'close') closed = true;
      else if (o.type === 'commit') {
        stored.push(Buffer.concat(o.body));
        queue.push(...m.step({ type: 'committed', nowMs: now }));
      } else if (o.type === 'policy') {
        queue.push(...m.step({ type: 'verdict', nowMs: now, verdict: { action: 'continue' } }));
      }
    }
  };
  const isRelayClient = isInNetworks(networkList(t.config.relay.networks), t.peer);
  handle(
    m.step({
      type: 'connected',
      nowMs: now,
      sessionId: 'TESTSESSION',
      peer: { address: t.peer, port: 40000 },
      local: { address: '127.0.0.1', port: 2525 },
      isRelayClient,
      isTls: false,
    }),
  );
  let cursor = 0;
  for (const step of t.steps) {
    now += 1000;
    switch (step.kind) {
      case 'send':
        for (const piece of chunker(step.data)) handle(m.step({ type: 'bytes', nowMs: now, data: piece }));
        break;
      case 'tls':
        handle(m.step({ type: 'tls-ready', nowMs: now, protocol: 'TLSv1.3' }));
        break;
      case 'expect': {
        const got = replyLines[cursor];
        assert.ok(got !== undefined, `${t.name}:${step.line}: expected "${step.pattern}", got no reply (replies so far: ${JSON.stringify(replyLines)})`);
        assert.ok(matches(step.pattern, got), `${t.name}:${step.line}: expected "${step.pattern}", got "${got}"`);
        cursor++;
        break;
      }
      case 'closed':
        assert.ok(closed, `${t.name}:${step.line}: expected the server to close`);
        break;
      case 'spool-count':
        assert.equal(stored.length, step.count, `${t.name}:${step.line}: stored messages`);
        break;
      case 'stored':
        assert.equal(withoutReceived(stored[stored.length - 1].toString('latin1')), step.content, `${t.name}:${step.line}: stored content`);
        break;
    }
  }
  assert.equal(replyLines.length, cursor, `${t.name}: unexpected extra replies ${JSON.stringify(replyLines.slice(cursor))}`);
  return { replies: replyLines, stored, closed };
}
