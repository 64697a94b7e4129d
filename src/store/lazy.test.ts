// The lazily opened state store: never opened unless used, opened once for concurrent first
// callers, a failed open is a StoreError (a tempfail for the caller) retried only after a pause.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { LazyStateStore } from './lazy.ts';
import { openStateStore } from './open.ts';
import { StoreError, type StateStore } from './store.ts';

test('lazy store: unused, it is never opened (purge and close included)', async () => {
  let opens = 0;
  const store = new LazyStateStore(async () => {
    opens++;
    throw new Error('must not open');
  });
  assert.equal(await store.purgeExpired(), 0);
  await store.close();
  assert.equal(opens, 0);
  assert.equal(store.isOpen, false);
});

test('lazy store: the first use opens the real backend once, for concurrent callers too', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-lazy-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let opens = 0;
  const store = new LazyStateStore(() => {
    opens++;
    return openStateStore('sqlite', { dir });
  });
  await Promise.all([store.set('a', '1', 60), store.set('b', '2', 60), store.increment('n', 60)]);
  assert.equal(opens, 1);
  assert.equal(store.isOpen, true);
  assert.equal(await store.get('a'), '1');
  assert.equal(await store.increment('n', 60), 2);
  await store.close();
  await assert.rejects(store.get('a'), StoreError);
});

test('lazy store: a failed open is a StoreError, retried only after a pause', async () => {
  let nowMs = 1_000;
  let opens = 0;
  let isDiskFull = true;
  const backend = new Map<string, string>();
  const fake = { get: async (k: string) => backend.get(k) ?? null } as unknown as StateStore;
  const failures: unknown[] = [];
  const store = new LazyStateStore(
    async () => {
      opens++;
      if (isDiskFull) throw new Error('database or disk is full');
      return fake;
    },
    { now: () => nowMs, onOpenFailed: (err) => failures.push(err) },
  );
  await assert.rejects(store.get('k'), (err: unknown) => err instanceof StoreError && err.code === 'STORE_FAILED');
  await assert.rejects(store.get('k'), StoreError);
  assert.equal(opens, 1, 'not retried at once');
  assert.equal(failures.length, 1);
  isDiskFull = false;
  nowMs += 5_000;
  backend.set('k', 'v');
  assert.equal(await store.get('k'), 'v');
  assert.equal(opens, 2);
});
