// The body budget alone: reserve takes only what fits, release gives back only what was taken,
// and any sequence of reservations and releases by many handles keeps it within [0, limit] and
// brings it back to zero once every handle has released (fast-check).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { BodyBudget } from './body-budget.ts';

test('reserve takes what fits and refuses, taking nothing, what does not', () => {
  const b = new BodyBudget(100);
  assert.equal(b.reserve(60), true);
  assert.equal(b.reserve(41), false);
  assert.equal(b.usedBytes, 60);
  assert.equal(b.reserve(40), true);
  assert.equal(b.usedBytes, 100);
  assert.equal(b.reserve(1), false);
  assert.equal(b.reserve(0), true, 'nothing always fits');
  b.release(100);
  assert.equal(b.usedBytes, 0);
});

test('giving back more than was reserved, or a negative amount, is our bug: it throws and changes nothing', () => {
  const b = new BodyBudget(100);
  b.reserve(10);
  assert.throws(() => b.release(11), /release of 11 octets with 10 reserved/);
  assert.throws(() => b.release(-1));
  assert.throws(() => b.reserve(-5));
  assert.equal(b.usedBytes, 10);
  assert.throws(() => new BodyBudget(-1));
  assert.throws(() => new BodyBudget(1.5));
});

/** One step of a handle: grow what it holds by `bytes` (a read), or give everything back. */
type Op = { handle: number; kind: 'grow'; bytes: number } | { handle: number; kind: 'release' };

const op = (handles: number): fc.Arbitrary<Op> =>
  fc.oneof(
    fc.record({ handle: fc.nat(handles - 1), kind: fc.constant('grow' as const), bytes: fc.nat(5000) }),
    fc.record({ handle: fc.nat(handles - 1), kind: fc.constant('release' as const) }),
  );

test('any sequence of reservations and releases across handles stays within [0, limit], equals what the handles hold, and ends at zero', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 20_000 }), fc.integer({ min: 1, max: 8 }).chain((n) => fc.tuple(fc.constant(n), fc.array(op(n), { maxLength: 200 }))), (limit, [handles, ops]) => {
      const budget = new BodyBudget(limit);
      // As the machine does: each handle remembers what it reserved and gives exactly that back.
      const reserved = new Array<number>(handles).fill(0);
      for (const o of ops) {
        if (o.kind === 'grow') {
          const before = budget.usedBytes;
          const isTaken = budget.reserve(o.bytes);
          assert.equal(isTaken, before + o.bytes <= limit);
          if (isTaken) reserved[o.handle] += o.bytes;
          else assert.equal(budget.usedBytes, before, 'a refused reservation takes nothing');
        } else {
          budget.release(reserved[o.handle]);
          reserved[o.handle] = 0;
        }
        assert.ok(budget.usedBytes >= 0 && budget.usedBytes <= limit, `used ${budget.usedBytes} of ${limit}`);
        assert.equal(budget.usedBytes, reserved.reduce((a, b) => a + b, 0));
      }
      for (let h = 0; h < handles; h++) budget.release(reserved[h]);
      assert.equal(budget.usedBytes, 0);
    }),
    { seed: 9090, numRuns: 300 },
  );
});
