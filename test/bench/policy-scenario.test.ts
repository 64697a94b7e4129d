// The benchmark's policy scenario (bench/policy.ts) pre-allows the load's greylist triplet by
// writing the state store before the server starts: this checks that what it writes is what the
// greylist check reads (same key, a passed record), through the real machine, pipeline and sqlite
// store, so a change to the check's key or record cannot turn the benchmark into a refusal count.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { preAllowTriplet } from '../../bench/policy.ts';
import { GREYLIST_DEFAULTS, greylistCheck } from '../../src/policy/checks/greylist/check.ts';
import { PolicyPipeline } from '../../src/policy/pipeline.ts';
import { openStateStore } from '../../src/store/open.ts';
import { policySession } from '../helpers/drive.ts';

test('bench policy scenario: a pre-allowed triplet passes greylisting; others still wait', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-bench-policy-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await preAllowTriplet(dir, '127.0.0.1', 'Sender@Example.org', 'user@example.test');

  const store = await openStateStore('sqlite', { dir });
  t.after(() => store.close());
  const pipeline = new PolicyPipeline([greylistCheck({ store, stage: 'rcpt', ...GREYLIST_DEFAULTS, now: Date.now })], {
    log: pino({ level: 'silent' }),
    defaultTimeoutMs: 1000,
    store,
  });
  const rcpt = async (address: string, sender: string): Promise<string | undefined> =>
    (await policySession(pipeline, `HELO c.example\r\nMAIL FROM:<${sender}>\r\nRCPT TO:<user@example.test>\r\n`, { address, nowMs: Date.now })).at(-1);

  assert.equal(await rcpt('127.0.0.1', 'sender@example.org'), '250 2.1.5 Recipient ok');
  assert.equal(await rcpt('127.0.0.9', 'sender@example.org'), '250 2.1.5 Recipient ok', 'the same /24');
  assert.equal(await rcpt('127.0.0.1', 'other@example.org'), '451 4.7.1 Greylisted, please try again later');
  assert.equal(await rcpt('127.0.1.1', 'sender@example.org'), '451 4.7.1 Greylisted, please try again later', 'another /24');
});
