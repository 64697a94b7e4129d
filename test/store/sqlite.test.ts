// Runs the state-store contract against the sqlite backend (temp dirs, an injected clock, no
// sleeps), plus what only sqlite has: batched purges, the open.ts factory, several worker threads
// writing one file. Never leaves a temp dir behind.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { openStateStore, SQLITE_STATE_FILE, StoreSettingError } from '../../src/store/open.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { storeContract } from './contract.ts';

const tempDir = () => mkdtempSync(path.join(os.tmpdir(), 'portcullis-store-'));

storeContract('sqlite', async () => {
  const dir = tempDir();
  let nowMs = Date.UTC(2026, 0, 1);
  const now = () => nowMs;
  return {
    open: async () => new SqliteStore(path.join(dir, SQLITE_STATE_FILE), { now }),
    passTime: async (seconds) => {
      nowMs += seconds * 1000;
    },
    isPurgeCounted: true,
    dispose: async () => rmSync(dir, { recursive: true, force: true }),
  };
});

test('sqlite: the file is in WAL mode, so readers do not wait for the writer', () => {
  const dir = tempDir();
  try {
    const store = new SqliteStore(path.join(dir, 'x.sqlite'));
    assert.ok(existsSync(path.join(dir, 'x.sqlite-wal')));
    void store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('sqlite: purgeExpired deletes in batches and yields between them', async () => {
  const dir = tempDir();
  let nowMs = 1_000_000;
  const store = new SqliteStore(path.join(dir, 's.sqlite'), { now: () => nowMs, purgeBatchRows: 100 });
  try {
    for (let i = 0; i < 1050; i++) await store.set(`k${i}`, 'v', i < 1000 ? 1 : 60);
    nowMs += 2000;
    // Each batch yields with setImmediate, so other callbacks get turns while the purge is under way.
    let immediates = 0;
    const counter = () => { immediates++; if (immediates < 50) setImmediate(counter); };
    setImmediate(counter);
    const purged = await store.purgeExpired();
    assert.equal(purged, 1000);
    assert.ok(immediates >= 5, `the purge yielded to the event loop (${immediates} turns ran during it)`);
    assert.equal(await store.get('k1049'), 'v');
    assert.equal(await store.purgeExpired(), 0);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('openStateStore: "sqlite" opens state.sqlite in the given directory; anything else is refused', async () => {
  const dir = tempDir();
  try {
    const store = await openStateStore('sqlite', { dir: path.join(dir, 'spool'), now: () => 5000 });
    await store.set('k', 'v', 1);
    assert.equal(await store.get('k'), 'v');
    await store.close();
    assert.ok(existsSync(path.join(dir, 'spool', SQLITE_STATE_FILE)));
    for (const bad of ['', 'SQLite', 'memcached://x', 'redis:/x', 'postgres://u:secret@h/db']) {
      await assert.rejects(openStateStore(bad, { dir }), (err: unknown) => {
        assert.ok(err instanceof StoreSettingError);
        assert.equal(err.code, 'STORE_SETTING_INVALID');
        assert.ok(!err.message.includes('secret'), 'a mistyped URL is not echoed with its password');
        return true;
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('sqlite: four worker threads incrementing one file concurrently lose no update (busy_timeout)', { timeout: 30_000 }, async () => {
  const dir = tempDir();
  const file = path.join(dir, SQLITE_STATE_FILE);
  const moduleUrl = new URL('../../src/store/sqlite.ts', import.meta.url).href;
  // Each thread has its own connection, as a worker process would; the code is data, not eval'd input.
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.moduleUrl).then(async ({ SqliteStore }) => {
      const store = new SqliteStore(workerData.file);
      const counts = [];
      for (let i = 0; i < workerData.n; i++) counts.push(await store.increment('shared', 60));
      await store.close();
      parentPort.postMessage(counts);
    });
  `;
  try {
    new SqliteStore(file).close(); // create the schema once, so the threads race only on writes
    const n = 250;
    const results = await Promise.all(Array.from({ length: 4 }, () => new Promise<number[]>((resolve, reject) => {
      const worker = new Worker(code, { eval: true, workerData: { moduleUrl, file, n } });
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => { if (code !== 0) reject(new Error(`worker exited ${code}`)); });
    })));
    const all = results.flat().sort((x, y) => x - y);
    assert.deepEqual(all, Array.from({ length: 4 * n }, (_, i) => i + 1));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
