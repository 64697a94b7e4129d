// What a crash leaves in the spool's tmp/ (half-written large messages) is removed when the
// server starts, and periodically after; a fresh file (a live writer's) is kept. Real CLI process.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { startTmpSweeper } from '../../src/server/tmp-sweeper.ts';
import { startCliServer } from '../helpers/cli-server.ts';

const HOUR_MS = 3_600_000;

function plant(tmpDir: string, name: string, ageMs: number): void {
  const file = path.join(tmpDir, name);
  writeFileSync(file, 'half a message');
  const at = new Date(Date.now() - ageMs);
  utimesSync(file, at, at);
}

test('serve removes stale tmp/ leftovers at start and keeps a fresh one', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-tmpclean-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const spoolDir = path.join(dir, 'spool');
  const tmpDir = path.join(spoolDir, 'tmp');
  mkdirSync(tmpDir, { recursive: true });
  plant(tmpDir, '1M84Z2G1RYD9V37DW-1.w1p4242', 3 * HOUR_MS);
  plant(tmpDir, '1M84Z2G1RYD9V37DX-1.w2p4243', 2 * HOUR_MS);
  plant(tmpDir, '1M84Z2G1RYD9V37DY-1.w1p4244', 60_000); // a live writer's, a minute old
  const server = await startCliServer({ workers: 2, spoolDir });
  t.after(() => server.cleanup());
  assert.deepEqual(readdirSync(tmpDir), ['1M84Z2G1RYD9V37DY-1.w1p4244']);
  assert.match(server.logText(), /"removed":2,.*"msg":"removed stale files from the spool's tmp\/"/);
  assert.deepEqual(await server.stop(), { code: 0, signal: null });
});

test('the sweeper runs again on its interval (files that became stale since)', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-tmpclean-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const tmpDir = path.join(dir, 'tmp');
  mkdirSync(tmpDir);
  let nowMs = Date.now();
  plant(tmpDir, 'a.w1p1', 0);
  const stop = await startTmpSweeper(dir, pino({ level: 'silent' }), { intervalMs: 10, now: () => nowMs });
  t.after(stop);
  assert.deepEqual(readdirSync(tmpDir), ['a.w1p1'], 'fresh at the first sweep');
  nowMs += 2 * HOUR_MS;
  const deadline = Date.now() + 2000;
  while (readdirSync(tmpDir).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(readdirSync(tmpDir), []);
});
