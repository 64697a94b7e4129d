// The cluster's rate against a store stand-in: the keys it counts under, within and over the rate,
// and "unavailable" (never a refusal) when the store fails or does not answer. The real Redis is
// in test/integration/shared-rate.test.ts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StoreError, type StateStore } from '../store/store.ts';
import { sharedRate, sharedRateKey, WarnPacer } from './shared-rate.ts';

/** Counters in a map; `fail` / `hang` make every call fail or never answer. */
function fakeStore(mode: 'ok' | 'fail' | 'hang' = 'ok'): StateStore & { counts: Map<string, number>; ttls: Map<string, number> } {
  const counts = new Map<string, number>();
  const ttls = new Map<string, number>();
  const answer = <T>(value: () => T): Promise<T> =>
    mode === 'ok' ? Promise.resolve(value()) : mode === 'fail' ? Promise.reject(new StoreError('connection lost')) : new Promise<T>(() => undefined);
  const none = (): never => {
    throw new Error('not used');
  };
  return {
    counts,
    ttls,
    get: (key) => answer(() => (counts.has(key) ? String(counts.get(key)) : null)),
    increment: (key, ttl) =>
      answer(() => {
        if (!ttls.has(key)) ttls.set(key, ttl);
        const n = (counts.get(key) ?? 0) + 1;
        counts.set(key, n);
        return n;
      }),
    set: none,
    delete: none,
    setIfAbsent: none,
    scan: none,
    purgeExpired: none,
    close: async () => undefined,
  };
}

test('counts under v1:rate:conn:<address>:<window start>, two windows of life, and refuses past the rate', async () => {
  const store = fakeStore();
  const rate = sharedRate(store, { count: 3, windowSeconds: 60 });
  const t0 = 1_800_000_000_000;
  for (let i = 0; i < 3; i++) assert.deepEqual(await rate.count('192.0.2.7', t0 + i), { kind: 'within' });
  assert.deepEqual(await rate.count('192.0.2.7', t0 + 10), { kind: 'over', value: 4 });
  assert.deepEqual(await rate.count('2001:db8::7', t0 + 10), { kind: 'within' }, 'another address is not slowed');
  assert.equal(store.counts.get(sharedRateKey('192.0.2.7', t0)), 4, 'a refused attempt counts too');
  assert.equal(sharedRateKey('192.0.2.7', t0), `v1:rate:conn:192.0.2.7:${t0 / 1000}`);
  assert.equal(store.ttls.get(sharedRateKey('192.0.2.7', t0)), 120);
  // Half a window into the next one the previous window weighs half: 4 x 0.5 = 2, one more fits.
  assert.deepEqual(await rate.count('192.0.2.7', t0 + 90_000), { kind: 'within' });
  assert.deepEqual(await rate.count('192.0.2.7', t0 + 90_001), { kind: 'over', value: 3 });
});

test('a failing store or one that does not answer is "unavailable", never a refusal', async () => {
  const failed = await sharedRate(fakeStore('fail'), { count: 1, windowSeconds: 60 }).count('192.0.2.7', 0);
  assert.deepEqual(failed, { kind: 'unavailable', reason: 'connection lost' });
  const late = await sharedRate(fakeStore('hang'), { count: 1, windowSeconds: 60 }, { timeoutMs: 20 }).count('192.0.2.7', 0);
  assert.deepEqual(late, { kind: 'unavailable', reason: 'no answer within 20 ms' });
});

test('after a failure the store is left alone for the pause, then asked again', async () => {
  const store = fakeStore('fail');
  let calls = 0;
  const counting: StateStore = { ...store, increment: (k, ttl) => (calls++, store.increment(k, ttl)) };
  const rate = sharedRate(counting, { count: 1, windowSeconds: 60 }, { pauseMs: 5000 });
  assert.equal((await rate.count('192.0.2.7', 10_000)).kind, 'unavailable');
  assert.deepEqual(await rate.count('192.0.2.7', 14_999), { kind: 'unavailable', reason: 'not asked for 5000 ms after a failure' });
  assert.equal(calls, 1);
  assert.equal((await rate.count('192.0.2.7', 15_000)).kind, 'unavailable');
  assert.equal(calls, 2);
});

test('WarnPacer: the first warning at once, then one per interval, counting those held back', () => {
  const p = new WarnPacer(60_000);
  assert.deepEqual(p.next(1000), { isDue: true, held: 0 });
  assert.deepEqual(p.next(2000), { isDue: false });
  assert.deepEqual(p.next(60_999), { isDue: false });
  assert.deepEqual(p.next(61_000), { isDue: true, held: 2 });
  assert.deepEqual(p.next(61_001), { isDue: false });
});
