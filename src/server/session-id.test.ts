// Session ids: shape, time order, and no repeats across many pool refills.

import assert from 'node:assert/strict';
import test from 'node:test';
import { newSessionId } from './session-id.ts';

test('a session id is 17 Crockford base-32 characters: 9 of time, then 8 of randomness', () => {
  const id = newSessionId(0);
  assert.match(id, /^[0-9A-HJKMNP-TV-Z]{17}$/);
  assert.equal(id.slice(0, 9), '000000000');
  assert.ok(newSessionId(1_000) < newSessionId(2_000), 'sortable by time');
});

test('10,000 ids in the same millisecond (ten pool refills) never repeat, and their random part varies in every position', () => {
  const ids = new Set<string>();
  for (let i = 0; i < 10_000; i++) ids.add(newSessionId(1_700_000_000_000));
  assert.equal(ids.size, 10_000);
  for (let pos = 9; pos < 17; pos++) assert.ok(new Set([...ids].map((id) => id[pos])).size === 32, `position ${pos} uses the whole alphabet`);
});
