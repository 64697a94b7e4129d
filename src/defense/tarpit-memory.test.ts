// The tarpit's memory (tarpit-memory.ts) in a real SQLite state store: a remembered client's
// whole network is remembered, for the TTL only; `verdicts list` shows the record as check
// `tarpit`, stage `connect`, and `verdicts forget` lifts it.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { forgetVerdicts, listVerdicts, parseVerdictTarget, type VerdictTarget } from '../policy/verdict-memory.ts';
import { SqliteStore } from '../store/sqlite.ts';
import { tarpitMemory } from './tarpit-memory.ts';

test('a tarpitted network is remembered for its TTL, listed, and forgotten on request', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-tarpit-'));
  let nowMs = 1_700_000_000_000;
  const store = new SqliteStore(path.join(dir, 'state.sqlite'), { now: () => nowMs });
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const memory = tarpitMemory(store, { ttlSeconds: 60, ipv4Prefix: 24, ipv6Prefix: 64 });
  assert.equal(await memory.isRemembered('192.0.2.7'), false);
  await memory.remember('192.0.2.7', nowMs);
  assert.equal(await memory.isRemembered('192.0.2.200'), true, 'the whole /24');
  assert.equal(await memory.isRemembered('198.51.100.1'), false);

  const listed = await listVerdicts(store, null);
  assert.equal(listed.length, 1);
  assert.equal(listed[0]!.check, 'tarpit');
  assert.equal(listed[0]!.stage, 'connect');
  assert.equal(listed[0]!.network, '192.0.2.0/24');
  assert.match(listed[0]!.reply, /^421 4\.7\.0/);

  await forgetVerdicts(store, parseVerdictTarget('192.0.2.7') as VerdictTarget);
  assert.equal(await memory.isRemembered('192.0.2.7'), false);

  await memory.remember('2001:db8:1:2::9', nowMs);
  assert.equal(await memory.isRemembered('2001:db8:1:2:ffff::1'), true, 'the whole /64');
  nowMs += 61_000;
  assert.equal(await memory.isRemembered('2001:db8:1:2::9'), false, 'forgotten after its TTL');
});
