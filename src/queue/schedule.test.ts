// The retry schedule, NOTIFY rules and dead-destination table, as pure functions of time.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_QUEUE_LIMITS as L, DestinationTable, isExpired, nextAttemptMs, notifyAllows, TimeHeap } from './schedule.ts';

test('retries back off like Postfix: 5 min first, doubling, at most 4000 s, never past the lifetime', () => {
  const arrival = 1_000_000;
  let now = arrival;
  const waits: number[] = [];
  for (let i = 0; i < 8; i++) {
    const next = nextAttemptMs(arrival, now, L);
    waits.push((next - now) / 1000);
    now = next;
  }
  assert.deepEqual(waits, [300, 300, 600, 1200, 2400, 4000, 4000, 4000]);
  const late = arrival + L.maxLifetimeMs - 60_000;
  assert.equal(nextAttemptMs(arrival, late, L), arrival + L.maxLifetimeMs);
  assert.equal(isExpired(arrival, arrival + L.maxLifetimeMs, L), true);
  assert.equal(isExpired(arrival, arrival + L.maxLifetimeMs - 1, L), false);
});

test('NOTIFY: NEVER sends nothing, a list sends what it names, none means failure and delay', () => {
  assert.equal(notifyAllows('NEVER', 'failure'), false);
  assert.equal(notifyAllows(['SUCCESS'], 'success'), true);
  assert.equal(notifyAllows(['SUCCESS'], 'relayed'), true);
  assert.equal(notifyAllows(['SUCCESS'], 'failure'), false);
  assert.equal(notifyAllows(['DELAY'], 'delay'), true);
  assert.equal(notifyAllows(undefined, 'failure'), true);
  assert.equal(notifyAllows(undefined, 'delay'), true);
  assert.equal(notifyAllows(undefined, 'success'), false);
});

test('a destination that keeps failing is dead for a doubling backoff, then probed one at a time', () => {
  const d = new DestinationTable({ ...L, deadAfterFailures: 3, destinationConcurrency: 2 });
  let now = 0;
  d.started('x');
  assert.equal(d.hasRoom('x'), true);
  d.started('x');
  assert.equal(d.hasRoom('x'), false, 'concurrency 2');
  d.finished('x', true, now);
  d.finished('x', true, now);
  assert.equal(d.isDead('x', now), false);
  d.started('x');
  d.finished('x', true, now);
  assert.equal(d.isDead('x', now), true, 'dead after 3 failures');
  assert.equal(d.deadUntilMs('x'), L.minBackoffMs);
  now = L.minBackoffMs;
  assert.equal(d.isDead('x', now), false);
  d.started('x');
  assert.equal(d.hasRoom('x'), false, 'one probe at a time');
  d.finished('x', true, now);
  assert.equal(d.deadUntilMs('x'), now + 2 * L.minBackoffMs, 'backoff doubles');
  now = d.deadUntilMs('x');
  d.started('x');
  d.finished('x', false, now);
  assert.equal(d.isDead('x', now), false);
  assert.equal(d.hasRoom('x'), true);
  d.started('x');
  assert.equal(d.hasRoom('x'), true, 'full concurrency after a success');
});

test('TimeHeap pops in time order', () => {
  const h = new TimeHeap();
  const times = Array.from({ length: 500 }, (_, i) => (i * 7919) % 1000);
  for (const [i, t] of times.entries()) h.push(t, `k${i}`);
  const out: number[] = [];
  for (let e = h.pop(); e !== undefined; e = h.pop()) out.push(e.timeMs);
  assert.deepEqual(out, [...times].sort((a, b) => a - b));
});
