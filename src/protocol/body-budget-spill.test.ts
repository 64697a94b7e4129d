// The body budget in the core: sessions sharing one BodyBudget reserve what their bodies hold in
// memory; a body that does not fit goes to its file early (before bodyMemoryBytes), and every
// way a transaction ends (spill, commit, failed commit, RSET, EHLO, refused content, a policy
// refusal, a failed transform, the client gone, dispose) gives its reservation back, so the
// budget returns to zero (fast-check over interleaved sessions too). A leak would slowly turn
// every message into a spill.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MachineDriver, testMachineConfig, type DriveOptions } from '../../test/helpers/drive.ts';
import { BodyBudget } from './body-budget.ts';
import type { Output } from './io.ts';
import type { MachineConfig } from './machine-config.ts';
import { REPLY } from './replies.ts';
import type { PolicyStage } from './verdict.ts';

const THRESHOLD = 64 * 1024;
const ENVELOPE = 'EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\n';
const HEADER = 'Subject: budget\r\n\r\n';

function config(budget: BodyBudget, over: Partial<MachineConfig> = {}): MachineConfig {
  return testMachineConfig({ maxMessageBytes: 1 << 22, isTlsAvailable: false, bodyMemoryBytes: THRESHOLD, bodyBudget: budget, ...over });
}

/** `bytes` octets of body lines (72 octets each, the last one shorter). */
function lines(bytes: number, mark = 'b'): string {
  let s = '';
  while (s.length + 72 <= bytes) s += `${mark.repeat(70)}\r\n`;
  return s + (bytes - s.length >= 2 ? `${mark.repeat(bytes - s.length - 2)}\r\n` : '');
}

function appended(d: MachineDriver): number {
  let n = 0;
  for (const o of d.outputs) if (o.type === 'append-body') for (const c of o.chunks) n += c.length;
  return n;
}

function commitOf(d: MachineDriver): Extract<Output, { type: 'commit' }> | undefined {
  return d.outputs.findLast((o) => o.type === 'commit') as Extract<Output, { type: 'commit' }> | undefined;
}

const reserved = (d: MachineDriver): number => d.machine.transaction?.reservedBytes ?? 0;

test('a small body reserves what it holds until its commit, then gives it back; it never goes to a file', () => {
  const budget = new BodyBudget(1 << 20);
  const d = new MachineDriver(config(budget));
  d.send(`${ENVELOPE}DATA\r\n${HEADER}${lines(3000)}`);
  assert.equal(budget.usedBytes, HEADER.length + 3000, 'reserved as it arrives');
  assert.equal(reserved(d), budget.usedBytes);
  d.send('.\r\n');
  assert.equal(commitOf(d)?.message.rest.kind, 'memory');
  assert.equal(budget.usedBytes, HEADER.length + 3000, 'held (and reserved) until the spool has it');
  d.step({ type: 'committed', nowMs: d.tick() });
  assert.match(d.replyLines().at(-1)!, /^250 2\.0\.0 Ok: queued/);
  assert.equal(budget.usedBytes, 0);
  assert.equal(appended(d), 0);
});

test('when the budget is exhausted a body goes to its file early, and gives its reservation back; the others keep theirs', () => {
  const budget = new BodyBudget(48 * 1024);
  // A holds 40 KiB (under its own 64 KiB threshold): in memory, reserved.
  const a = new MachineDriver(config(budget), { commits: 'accept' });
  a.send(`${ENVELOPE}DATA\r\n${HEADER}${lines(40 * 1024, 'a')}`);
  assert.equal(appended(a), 0);
  const aHeld = budget.usedBytes;
  assert.equal(aHeld, HEADER.length + 40 * 1024);
  // B's 12 KiB do not fit beside A's: B goes to its file at once, well before 64 KiB.
  const b = new MachineDriver(config(budget), { commits: 'accept' });
  b.send(`${ENVELOPE}DATA\r\n${HEADER}${lines(12 * 1024, 'b')}`);
  assert.equal(appended(b), 12 * 1024, 'everything after the header section went to the body file');
  assert.equal(reserved(b), 0);
  assert.equal(budget.usedBytes, aHeld, 'B reserves nothing once spilled; A keeps its reservation');
  // B goes on arriving: it is past its spill, it reserves nothing more.
  b.send(lines(20 * 1024, 'c'));
  assert.equal(budget.usedBytes, aHeld);
  b.send('.\r\n');
  const stored = commitOf(b)!.message;
  assert.equal(stored.rest.kind, 'spilled');
  assert.match(b.stored[0].toString('latin1'), /\r\nSubject: budget\r\n\r\nbbbb[^]*cccc\r\n$/);
  assert.equal(b.stored[0].length, stored.size, 'the stored message is whole');
  // A small C while A still holds most of the budget: 4 KiB fit, so C stays in memory.
  const c = new MachineDriver(config(budget), { commits: 'accept' });
  c.send(`${ENVELOPE}DATA\r\n${HEADER}${lines(4096)}`);
  assert.equal(appended(c), 0);
  assert.equal(budget.usedBytes, aHeld + HEADER.length + 4096);
  c.send('.\r\n');
  assert.equal(commitOf(c)!.message.rest.kind, 'memory');
  a.send('.\r\n');
  assert.equal(commitOf(a)!.message.rest.kind, 'memory');
  assert.equal(budget.usedBytes, 0);
});

test('a body over the budget whose header section has not ended yet waits for it (looked for once per 64 KiB, and at the end)', () => {
  const budget = new BodyBudget(8 * 1024);
  const big = new MachineDriver(config(budget));
  big.send(`${ENVELOPE}DATA\r\n${HEADER}${lines(8 * 1024 - HEADER.length - 8)}`);
  assert.equal(budget.usedBytes, 8 * 1024 - 8, '8 octets left');
  const d = new MachineDriver(config(budget), { commits: 'accept' });
  d.send(`${ENVELOPE}DATA\r\nSubject: slow\r\n`);
  assert.equal(appended(d), 0, 'no header end yet: nothing can go to the file');
  d.send('X-B: 1\r\n');
  assert.equal(d.machine.transaction!.headerProbeBytes, 'Subject: slow\r\n'.length, 'not looked for again at the next small read');
  d.send(`\r\n${lines(2048)}.\r\n`);
  const m = commitOf(d)!.message;
  assert.equal(m.rest.kind, 'spilled', 'spilled at its end');
  assert.match(d.stored[0].toString('latin1'), /\r\nSubject: slow\r\nX-B: 1\r\n\r\nbbb/);
  assert.equal(budget.usedBytes, big.machine.transaction!.reservedBytes);
  big.machine.dispose();
  assert.equal(budget.usedBytes, 0);
});

/** A session that holds `bytes` of body in memory, reserved, and the driver playing it. */
function holding(budget: BodyBudget, bytes: number, over: Partial<MachineConfig> = {}, opts: DriveOptions = {}): MachineDriver {
  const d = new MachineDriver(config(budget, over), opts);
  d.send(`${ENVELOPE}DATA\r\n${HEADER}${lines(bytes)}`);
  assert.ok(budget.usedBytes >= bytes, `reserved ${budget.usedBytes}`);
  return d;
}

/** A session whose first BDAT chunk (not LAST) is held in memory. */
function holdingBdat(budget: BodyBudget, bytes: number): MachineDriver {
  const d = new MachineDriver(config(budget));
  const chunk = `${HEADER}${lines(bytes)}`;
  assert.match(d.send(`${ENVELOPE}BDAT ${chunk.length}\r\n${chunk}`).at(-1)!, /^250 2\.0\.0 /);
  assert.equal(budget.usedBytes, chunk.length);
  return d;
}

const verdict = (action: 'reject' | 'tempfail' | 'disconnect') => ({ action, reply: REPLY.unknownRecipient, check: 'test', reason: 'test' }) as const;

test('every way a transaction ends gives its reservation back: the budget returns to zero', async (t) => {
  const budget = new BodyBudget(1 << 20);
  const ends: [string, () => MachineDriver][] = [
    ['committed', () => {
      const d = holding(budget, 5000);
      d.send('.\r\n');
      d.step({ type: 'committed', nowMs: d.tick() });
      return d;
    }],
    ['commit failed (451)', () => {
      const d = holding(budget, 5000);
      d.send('.\r\n');
      d.step({ type: 'commit-failed', nowMs: d.tick(), reason: 'disk' });
      assert.match(d.replyLines().at(-1)!, /^451 /);
      return d;
    }],
    ['RSET after a BDAT chunk', () => {
      const d = holdingBdat(budget, 5000);
      assert.match(d.send('RSET\r\n').at(-1)!, /^250 2\.0\.0 Reset/);
      return d;
    }],
    ['EHLO again after a BDAT chunk', () => {
      const d = holdingBdat(budget, 5000);
      d.send('EHLO again.example\r\n');
      return d;
    }],
    ['QUIT after a BDAT chunk', () => {
      const d = holdingBdat(budget, 5000);
      d.send('QUIT\r\n');
      assert.ok(d.isClosed);
      return d;
    }],
    ['refused content: a bare LF (550)', () => {
      const d = holding(budget, 5000);
      assert.match(d.send('bare\nlf\r\n.\r\n').at(-1)!, /^550 5\.6\.0/);
      return d;
    }],
    ['refused content: too big (552), as it arrives', () => {
      const d = holding(budget, 5000, { maxMessageBytes: 8000 });
      d.send(lines(5000));
      assert.equal(budget.usedBytes, 0, 'given back as soon as the body is known to be refused');
      assert.match(d.send('.\r\n').at(-1)!, /^552 /);
      return d;
    }],
    ['refused content: a BDAT chunk past the size limit', () => {
      const d = holdingBdat(budget, 5000);
      const more = lines(1 << 22);
      assert.match(d.send(`BDAT ${more.length}\r\n${more}`).at(-1)!, /^552 /);
      return d;
    }],
    ['refused content: a header section larger than the threshold (552 5.3.4)', () => {
      const d = new MachineDriver(config(budget));
      let header = '';
      for (let i = 0; header.length < THRESHOLD * 2; i++) header += `X-F-${i}: ${'z'.repeat(60)}\r\n`;
      d.send(`${ENVELOPE}DATA\r\n${header}`);
      assert.equal(budget.usedBytes, 0);
      assert.equal(d.send('\r\nbody\r\n.\r\n').at(-1), '552 5.3.4 Message header section too large');
      return d;
    }],
    ['a data-stage refusal (550)', () => {
      const d = holding(budget, 5000, { policyStages: new Set<PolicyStage>(['data']) }, { policy: () => verdict('reject') });
      d.send('.\r\n');
      assert.match(d.replyLines().at(-1)!, /^5/);
      return d;
    }],
    ['a content-stage tempfail (451)', () => {
      const d = holding(budget, 5000, { policyStages: new Set<PolicyStage>(['content']) }, { policy: () => verdict('tempfail') });
      d.send('.\r\n');
      assert.match(d.replyLines().at(-1)!, /^5|^4/);
      return d;
    }],
    ['a content-stage disconnect', () => {
      const d = holding(budget, 5000, { policyStages: new Set<PolicyStage>(['content']) }, { policy: () => verdict('disconnect') });
      d.send('.\r\n');
      assert.ok(d.isClosed);
      return d;
    }],
    ['a content check that removes every recipient (discarded)', () => {
      const d = holding(budget, 5000, { policyStages: new Set<PolicyStage>(['content']) }, {
        policy: () => ({ action: 'continue', edits: { recipients: [{ op: 'delete', address: 'alice@example.test' }] } }),
      });
      d.send('.\r\n');
      assert.match(d.replyLines().at(-1)!, /discarded/);
      return d;
    }],
    ['a failed transform (451)', () => {
      const d = holding(budget, 5000, { hasTransform: true });
      d.send('.\r\n');
      d.step({ type: 'transform-failed', nowMs: d.tick(), reason: 'signer down' });
      assert.match(d.replyLines().at(-1)!, /^451 /);
      return d;
    }],
    ['the client half-closes mid-data', () => {
      const d = holding(budget, 5000);
      d.step({ type: 'end-of-input', nowMs: d.tick() });
      assert.ok(d.isClosed);
      return d;
    }],
    ['the data timeout', () => {
      const d = holding(budget, 5000);
      d.step({ type: 'timeout', nowMs: d.tick() });
      assert.ok(d.isClosed);
      return d;
    }],
    ['the connection is gone (dispose: a socket error, our bug), twice', () => {
      const d = holding(budget, 5000);
      d.machine.dispose();
      d.machine.dispose();
      assert.deepEqual(d.send(lines(5000)), [], 'a disposed machine serves nothing and reserves nothing');
      return d;
    }],
    ['dispose while waiting for the commit', () => {
      const d = holding(budget, 5000);
      d.send('.\r\n');
      assert.equal(d.machine.phase, 'waiting');
      d.machine.dispose();
      return d;
    }],
    ['a graceful stop mid-data: the message is finished, then 421', () => {
      const d = holding(budget, 5000, {}, { commits: 'accept' });
      d.step({ type: 'shutdown', nowMs: d.tick() });
      d.send('.\r\n');
      assert.ok(d.isClosed);
      return d;
    }],
  ];
  for (const [name, end] of ends) {
    await t.test(name, () => {
      const d = end();
      assert.equal(budget.usedBytes, 0, `${name}: the budget is back to zero`);
      assert.equal(reserved(d), 0);
    });
  }
});

test('the spill gives the reservation back: a body past its threshold holds none of the budget while it keeps arriving', () => {
  const budget = new BodyBudget(1 << 20);
  const d = new MachineDriver(config(budget), { commits: 'accept' });
  d.send(`${ENVELOPE}DATA\r\n${HEADER}${lines(THRESHOLD - 1000)}`);
  assert.ok(budget.usedBytes > THRESHOLD - 1000);
  d.send(lines(2000));
  assert.ok(appended(d) > 0, 'past the threshold: spilled');
  assert.equal(budget.usedBytes, 0);
  for (let i = 0; i < 5; i++) d.send(lines(30_000));
  assert.equal(budget.usedBytes, 0);
  d.send('.\r\n');
  assert.equal(commitOf(d)!.message.rest.kind, 'spilled');
  assert.equal(budget.usedBytes, 0);
});

test('without a budget (none configured) the machine behaves as before: only the threshold spills', () => {
  const d = new MachineDriver(testMachineConfig({ maxMessageBytes: 1 << 22, isTlsAvailable: false, bodyMemoryBytes: THRESHOLD }), { commits: 'accept' });
  d.send(`${ENVELOPE}DATA\r\n${HEADER}${lines(THRESHOLD - 1000)}.\r\n`);
  assert.equal(commitOf(d)!.message.rest.kind, 'memory');
  assert.equal(d.machine.transaction, null);
});

/** What one of several interleaved sessions does next. */
type Act =
  | { s: number; kind: 'bytes'; bytes: number }
  | { s: number; kind: 'end' }
  | { s: number; kind: 'rset-bdat'; bytes: number }
  | { s: number; kind: 'commit' | 'fail' | 'gone' | 'timeout' | 'reopen' };

const SESSIONS = 4;

test('any interleaving of sessions sharing a budget: within its limit, equal to what the sessions reserve, zero once they are gone', () => {
  const act: fc.Arbitrary<Act> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ s: fc.nat(SESSIONS - 1), kind: fc.constant('bytes' as const), bytes: fc.integer({ min: 1, max: 30_000 }) }) },
    { weight: 2, arbitrary: fc.record({ s: fc.nat(SESSIONS - 1), kind: fc.constant('end' as const) }) },
    { weight: 1, arbitrary: fc.record({ s: fc.nat(SESSIONS - 1), kind: fc.constant('rset-bdat' as const), bytes: fc.integer({ min: 1, max: 30_000 }) }) },
    { weight: 2, arbitrary: fc.record({ s: fc.nat(SESSIONS - 1), kind: fc.constantFrom('commit' as const, 'fail' as const, 'gone' as const, 'timeout' as const, 'reopen' as const) }) },
  );
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 120_000 }), fc.array(act, { maxLength: 60 }), (limit, acts) => {
      const budget = new BodyBudget(limit);
      const open = (): MachineDriver => {
        const d = new MachineDriver(config(budget));
        d.send(`${ENVELOPE}DATA\r\n${HEADER}`);
        return d;
      };
      const sessions = Array.from({ length: SESSIONS }, open);
      for (const a of acts) {
        const d = sessions[a.s];
        switch (a.kind) {
          case 'bytes':
            d.send(lines(a.bytes));
            break;
          case 'end':
            d.send('.\r\n');
            break;
          case 'rset-bdat': {
            const chunk = `${HEADER}${lines(a.bytes)}`;
            d.send(`RSET\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT ${chunk.length}\r\n${chunk}`);
            break;
          }
          case 'commit':
          case 'fail':
            if (d.machine.phase === 'waiting') d.step(a.kind === 'commit' ? { type: 'committed', nowMs: d.tick() } : { type: 'commit-failed', nowMs: d.tick(), reason: 'x' });
            else d.send('MAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
            break;
          case 'gone':
            d.machine.dispose();
            break;
          case 'timeout':
            d.step({ type: 'timeout', nowMs: d.tick() });
            break;
          case 'reopen':
            if (d.isClosed || d.machine.phase === 'closed') sessions[a.s] = open();
            break;
        }
        const sum = sessions.reduce((n, x) => n + reserved(x), 0);
        assert.ok(budget.usedBytes <= limit);
        assert.equal(budget.usedBytes, sum, 'the budget holds exactly what the sessions reserved');
        for (const x of sessions) {
          const txn = x.machine.transaction;
          if (txn === null || txn.content === null || txn.spilled !== null) continue;
          // A body holds more than it reserved only while its header section is not known to
          // have ended (looked for, not found): it cannot go to its file before that.
          if (txn.content.heldBytes > txn.reservedBytes) assert.ok(txn.headerProbeBytes > 0, `held ${txn.content.heldBytes}, reserved ${txn.reservedBytes}`);
        }
      }
      for (const x of sessions) x.machine.dispose();
      assert.equal(budget.usedBytes, 0);
    }),
    { seed: 777, numRuns: 150 },
  );
});
