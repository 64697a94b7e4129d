// The state-store contract: the same tests run against every backend (sqlite.test.ts,
// redis.test.ts), so the policy engine can rely on one behaviour whichever `state.store` is set.
// Owns only backend-independent expectations; never reaches into a backend's internals and never
// sleeps where the backend lets it move time instead.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import type { StateStore } from '../../src/store/store.ts';

/** One shared state (a sqlite file, a Redis database) that tests may open several stores on. */
export type StoreBacking = {
  /** Another store on the same state, as another worker process or node would open it. */
  open: () => Promise<StateStore>;
  /** Lets at least `seconds` pass as the backend sees time (an injected clock, or a bounded wait). */
  passTime: (seconds: number) => Promise<void>;
  /** Whether purgeExpired deletes and counts records (sqlite) or Redis expires them itself (0). */
  isPurgeCounted: boolean;
  /** Removes what newBacking created (temp dirs); stores opened by the suite are closed by it. */
  dispose: () => Promise<void>;
};

const TEST_TIMEOUT_MS = 15_000;

export function storeContract(name: string, newBacking: () => Promise<StoreBacking>): void {
  /** Runs `body` with a fresh backing and unique keys, closing every store it opened. */
  const withBacking = (body: (b: StoreBacking & { key: (k: string) => string }) => Promise<void>) => async () => {
    const backing = await newBacking();
    const opened: StateStore[] = [];
    const prefix = `test:${randomUUID()}:`;
    try {
      await body({
        ...backing,
        open: async () => {
          const store = await backing.open();
          opened.push(store);
          return store;
        },
        key: (k) => prefix + k,
      });
    } finally {
      for (const store of opened) await store.close();
      await backing.dispose();
    }
  };

  describe(`state store contract: ${name}`, { timeout: TEST_TIMEOUT_MS * 4 }, () => {
    test('set, get, overwrite and delete', { timeout: TEST_TIMEOUT_MS }, withBacking(async ({ open, key }) => {
      const store = await open();
      assert.equal(await store.get(key('a')), null);
      await store.set(key('a'), 'one', 60);
      assert.equal(await store.get(key('a')), 'one');
      await store.set(key('a'), 'two', 60);
      assert.equal(await store.get(key('a')), 'two');
      await store.set(key('b'), '', 60);
      assert.equal(await store.get(key('b')), '', 'an empty value is present, not absent');
      await store.delete(key('a'));
      assert.equal(await store.get(key('a')), null);
      await store.delete(key('never-set'));
      const unicode = 'grey \u00e9\u{1F4E7} \r\n\0';
      await store.set(key('u'), unicode, 60);
      assert.equal(await store.get(key('u')), unicode);
    }));

    test('scan finds the live keys under a prefix (glob characters are literal), with their expiry, up to a limit', { timeout: TEST_TIMEOUT_MS }, withBacking(async ({ open, passTime, key }) => {
      const store = await open();
      await store.set(key('v:a'), 'one', 60);
      await store.set(key('v:b'), 'two', 3600);
      await store.set(key('v*:c'), 'glob', 60);
      await store.set(key('w:a'), 'other', 60);
      await store.set(key('v:short'), 'gone', 1);
      await passTime(2);
      const found = (await store.scan(key('v:'), 100)).sort((x, y) => x.key.localeCompare(y.key));
      assert.deepEqual(found.map((e) => [e.key, e.value]), [[key('v:a'), 'one'], [key('v:b'), 'two']]);
      // The backend's own clock may be injected: compare the two expiries, set 3,540 s apart.
      const apart = found[1]!.expiresAtMs - found[0]!.expiresAtMs;
      assert.ok(apart > 3_530_000 && apart < 3_550_000, `expiries are the TTLs' ends (${apart} ms apart)`);
      assert.deepEqual((await store.scan(key('v*'), 100)).map((e) => e.value), ['glob']);
      assert.equal((await store.scan(key('v:'), 1)).length, 1);
      assert.deepEqual(await store.scan(key('none:'), 100), []);
    }));

    test('a TTL that is not a positive whole number of seconds is our bug and throws', { timeout: TEST_TIMEOUT_MS }, withBacking(async ({ open, key }) => {
      const store = await open();
      for (const ttl of [0, -1, 1.5, Number.NaN]) {
        await assert.rejects(store.set(key('a'), 'x', ttl), RangeError);
        await assert.rejects(store.increment(key('a'), ttl), RangeError);
        await assert.rejects(store.setIfAbsent(key('a'), 'x', ttl), RangeError);
      }
    }));

    test('expired keys read as absent; increment and setIfAbsent start over; purge keeps live keys', { timeout: TEST_TIMEOUT_MS }, withBacking(async ({ open, passTime, isPurgeCounted, key }) => {
      const store = await open();
      await store.set(key('short'), 'v', 1);
      await store.set(key('long'), 'kept', 3600);
      assert.equal(await store.increment(key('counter'), 1), 1);
      assert.equal(await store.increment(key('counter'), 1), 2);
      assert.equal(await store.setIfAbsent(key('once'), 'first', 1), true);
      assert.equal(await store.get(key('short')), 'v');
      assert.equal(await store.setIfAbsent(key('once'), 'second', 1), false);

      await passTime(1);

      assert.equal(await store.get(key('short')), null);
      assert.equal(await store.get(key('counter')), null);
      assert.equal(await store.get(key('once')), null);
      assert.equal(await store.get(key('long')), 'kept');
      const purged = await store.purgeExpired();
      assert.equal(purged, isPurgeCounted ? 3 : 0);
      assert.equal(await store.get(key('long')), 'kept');
      assert.equal(await store.purgeExpired(), 0, 'nothing left to purge');

      assert.equal(await store.increment(key('counter'), 60), 1, 'an expired counter restarts at 1');
      assert.equal(await store.setIfAbsent(key('once'), 'second', 60), true, 'an expired key is absent');
      assert.equal(await store.get(key('once')), 'second');
    }));

    test('increment keeps the TTL set at creation; set restarts it', { timeout: TEST_TIMEOUT_MS }, withBacking(async ({ open, passTime, key }) => {
      const store = await open();
      assert.equal(await store.increment(key('c'), 1), 1);
      // A later increment with a long TTL must not extend the counter's life (a window, not a slide).
      assert.equal(await store.increment(key('c'), 3600), 2);
      await store.set(key('s'), 'a', 1);
      await store.set(key('s'), 'b', 3600);
      await passTime(1);
      assert.equal(await store.get(key('c')), null);
      assert.equal(await store.get(key('s')), 'b');
    }));

    test('increment is atomic under 200 concurrent calls from two stores', { timeout: TEST_TIMEOUT_MS }, withBacking(async ({ open, key }) => {
      const [a, b] = [await open(), await open()];
      const counts = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? a : b).increment(key('n'), 60)));
      assert.deepEqual([...counts].sort((x, y) => x - y), Array.from({ length: 200 }, (_, i) => i + 1));
      assert.equal(await a.get(key('n')), '200');
      assert.equal(await b.increment(key('n'), 60), 201);
    }));

    test('setIfAbsent: exactly one of many concurrent callers wins, and its value is kept', { timeout: TEST_TIMEOUT_MS }, withBacking(async ({ open, key }) => {
      const [a, b] = [await open(), await open()];
      const results = await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 === 0 ? a : b).setIfAbsent(key('k'), `v${i}`, 60)));
      const winners = results.flatMap((won, i) => (won ? [i] : []));
      assert.equal(winners.length, 1);
      assert.equal(await a.get(key('k')), `v${winners[0]}`);
      assert.equal(await b.get(key('k')), `v${winners[0]}`);
      await a.delete(key('k'));
      assert.equal(await b.setIfAbsent(key('k'), 'again', 60), true, 'a deleted key is absent');
    }));

    test('two stores on the same state see each other\'s writes', { timeout: TEST_TIMEOUT_MS }, withBacking(async ({ open, key }) => {
      const [a, b] = [await open(), await open()];
      await a.set(key('x'), 'from-a', 60);
      assert.equal(await b.get(key('x')), 'from-a');
      await b.set(key('x'), 'from-b', 60);
      assert.equal(await a.get(key('x')), 'from-b');
      await b.delete(key('x'));
      assert.equal(await a.get(key('x')), null);
      assert.equal(await a.increment(key('c'), 60), 1);
      assert.equal(await b.increment(key('c'), 60), 2);
      assert.equal(await a.setIfAbsent(key('g'), 'a', 60), true);
      assert.equal(await b.setIfAbsent(key('g'), 'b', 60), false);
    }));

    test('a closed store can be closed again', { timeout: TEST_TIMEOUT_MS }, withBacking(async ({ open }) => {
      const store = await open();
      await store.close();
      await store.close();
    }));
  });
}
