// Runs a policy test suite against both state-store backends: node:sqlite in a temporary dir and
// a real redis-server (started once for the calling test file, stopped after it). Each test gets
// a fresh store: its own sqlite file, or its own Redis database number, so tests never share keys.

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { openStateStore } from '../../src/store/open.ts';
import type { StateStore } from '../../src/store/store.ts';
import { startRedisServer, type RedisTestServer } from './redis-server.ts';

export type StoreKind = 'sqlite' | 'redis';
export const STORE_KINDS: readonly StoreKind[] = ['sqlite', 'redis'];

/** Redis serves databases 0..15 by default; 0 is left alone. */
const REDIS_DATABASES = 15;

/** Call at the top level of a test file: registers the redis-server start/stop hooks. */
export function useStores(): (kind: StoreKind, t: { after: (fn: () => Promise<void>) => void }, now?: () => number) => Promise<StateStore> {
  let redis: RedisTestServer | null = null;
  let db = 0;
  before(async () => {
    redis = await startRedisServer();
  });
  after(async () => {
    await redis?.stop();
  });
  return async (kind, t, now) => {
    if (kind === 'redis') {
      if (redis === null) throw new Error('redis-server did not start');
      db = (db % REDIS_DATABASES) + 1;
      const store = await openStateStore(`redis://127.0.0.1:${redis.port}/${db}`, { dir: '' });
      t.after(() => store.close());
      return store;
    }
    const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-store-'));
    const store = await openStateStore('sqlite', { dir, ...(now !== undefined ? { now } : {}) });
    t.after(async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    });
    return store;
  };
}
