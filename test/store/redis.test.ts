// Runs the state-store contract against a real redis-server (started by test/helpers/redis-server.ts
// for this file, stopped after it), plus the factory's Redis branch and a Redis that is not there.
// Never skips when redis-server is missing: the start fails, and so does this file.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { openStateStore } from '../../src/store/open.ts';
import { RedisStore } from '../../src/store/redis.ts';
import { StoreError } from '../../src/store/store.ts';
import { startRedisServer, type RedisTestServer } from '../helpers/redis-server.ts';
import { storeContract } from './contract.ts';

let server: RedisTestServer | null = null;
before(async () => {
  server = await startRedisServer();
});
after(async () => {
  await server?.stop();
});

const url = () => {
  if (server === null) throw new Error('redis-server did not start');
  return server.url;
};

storeContract('redis', async () => ({
  open: () => RedisStore.open(url()),
  // Redis expires keys with millisecond precision on access; a little margin beyond the TTL.
  passTime: (seconds) => sleep(seconds * 1000 + 150),
  isPurgeCounted: false,
  dispose: async () => {},
}));

test('openStateStore: "redis://host:port/db" opens the Redis backend on that database', async () => {
  const store = await openStateStore(url().replace(/\/0$/, '/3'), { dir: '/nonexistent' });
  const other = await RedisStore.open(url());
  try {
    await store.set('db-test', 'in-3', 60);
    assert.equal(await store.get('db-test'), 'in-3');
    assert.equal(await other.get('db-test'), null, 'database 0 does not see database 3');
  } finally {
    await store.close();
    await other.close();
  }
});

test('a Redis that goes away mid-use makes operations fail with StoreError, bounded in time', { timeout: 15_000 }, async () => {
  const doomed = await startRedisServer();
  const store = await RedisStore.open(doomed.url, { timeoutMs: 500 });
  try {
    await store.set('k', 'v', 60);
    await doomed.stop();
    const started = Date.now();
    await assert.rejects(store.get('k'), StoreError);
    await assert.rejects(store.increment('c', 60), StoreError);
    assert.ok(Date.now() - started < 8000, `failed in ${Date.now() - started} ms`);
  } finally {
    await store.close();
    await doomed.stop();
  }
});

test('a Redis that does not answer is a StoreError, bounded in time, not a crash or a hang', { timeout: 10_000 }, async () => {
  // Port 1 (tcpmux) is privileged and unused here, so the connection is refused at once.
  const started = Date.now();
  await assert.rejects(RedisStore.open('redis://127.0.0.1:1/0', { timeoutMs: 500 }), (err: unknown) => {
    assert.ok(err instanceof StoreError);
    assert.equal(err.code, 'STORE_FAILED');
    return true;
  });
  assert.ok(Date.now() - started < 5000);
});
