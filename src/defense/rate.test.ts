import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { judgeCounted, parseRate, rateText, slidingEstimate, SlidingRate, windowStartMs } from './rate.ts';

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

test('slidingEstimate: the previous window weighs all at the start of the current one, nothing at its end', () => {
  assert.equal(windowStartMs(125_000, 60_000), 120_000);
  assert.equal(slidingEstimate(2, 4, 120_000, 60_000), 6);
  assert.equal(slidingEstimate(2, 4, 150_000, 60_000), 4);
  assert.equal(slidingEstimate(2, 4, 179_999, 60_000) > 2, true);
});

test('judgeCounted (a shared counter, this event counted) agrees with SlidingRate.hit (this event not yet counted)', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 20 }),
      fc.integer({ min: 1, max: 120 }),
      fc.array(fc.integer({ min: 0, max: 200_000 }), { minLength: 1, maxLength: 60 }),
      (count, windowSeconds, gaps) => {
        const rate = { count, windowSeconds };
        const windowMs = windowSeconds * 1000;
        const local = new SlidingRate(rate);
        // The shared counters: every event counted per fixed window, as the store's increment does.
        const buckets = new Map<number, number>();
        let now = 1_000_000;
        for (const gap of gaps) {
          now += gap;
          const start = windowStartMs(now, windowMs);
          const current = (buckets.get(start) ?? 0) + 1;
          buckets.set(start, current);
          const shared = judgeCounted(rate, current, buckets.get(start - windowMs) ?? 0, now);
          const hit = local.hit('a', now);
          assert.equal(shared.isWithin, hit.isWithin);
          assert.equal(shared.value, hit.estimate);
        }
      },
    ),
  );
});
