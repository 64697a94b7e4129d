import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseRate, rateText, SlidingRate } from './rate.ts';

test('parseRate reads "COUNT/UNIT" and names what is wrong', () => {
  assert.deepEqual(parseRate('60/min'), { count: 60, windowSeconds: 60 });
  assert.deepEqual(parseRate('10/30s'), { count: 10, windowSeconds: 30 });
  assert.deepEqual(parseRate('1000/hour'), { count: 1000, windowSeconds: 3600 });
  assert.equal(rateText({ count: 60, windowSeconds: 60 }), '60/min');
  assert.equal(rateText({ count: 10, windowSeconds: 30 }), '10/30s');
  assert.match(String(parseRate('60')), /COUNT\/UNIT/);
  assert.match(String(parseRate('60/fortnight')), /unknown unit/);
  assert.match(String(parseRate('0/min')), /at least 1/);
  assert.match(String(parseRate('1/25hour')), /at most a day/);
});

test('SlidingRate: within the rate, past it, and free again once the window has slid by', () => {
  const r = new SlidingRate({ count: 3, windowSeconds: 60 });
  const t0 = 120_000;
  for (let i = 0; i < 3; i++) assert.equal(r.hit('a', t0 + i).isWithin, true);
  assert.equal(r.hit('a', t0 + 10).isWithin, false);
  assert.equal(r.hit('b', t0 + 10).isWithin, true, 'another key is not slowed');
  // Half a window later the previous window still weighs in: 4 x 0.5 = 2, so one more fits.
  assert.equal(r.hit('a', t0 + 90_000).isWithin, true);
  assert.equal(r.hit('a', t0 + 90_001).isWithin, false);
  // Two windows later nothing is left of it.
  assert.equal(r.hit('a', t0 + 240_000).isWithin, true);
  assert.ok(r.size <= 2);
});
