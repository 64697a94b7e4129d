// The pipeline built from TOML: which checks run and in which order is the configuration's say.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { parseConfig } from '../config/load.ts';
import { openStateStore } from '../store/open.ts';
import { policySession } from '../../test/helpers/drive.ts';
import { buildPipeline } from './build.ts';

const log = pino({ level: 'silent' });

test('nothing configured: no pipeline, so the machine makes no policy round trips', () => {
  assert.equal(buildPipeline(parseConfig('', 'empty.toml'), log), null);
});

test('recipients.addresses from TOML: listed users (any case) and @domain accepted, others refused at RCPT', async () => {
  const cfg = parseConfig('[domains]\nlocal = ["example.test"]\n[recipients]\naddresses = ["Alice@example.test", "carol@example.test"]\n', 'r.toml');
  const pipeline = buildPipeline(cfg, log)!;
  const r = await policySession(pipeline, 'HELO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<alice@EXAMPLE.test>\r\nRCPT TO:<Carol@example.test>\r\nRCPT TO:<bob@example.test>\r\n');
  assert.deepEqual(r.slice(3), ['250 2.1.5 Recipient ok', '250 2.1.5 Recipient ok', '550 5.1.1 Recipient address rejected: user unknown']);
  const catchAll = buildPipeline(parseConfig('[domains]\nlocal = ["example.test"]\n[recipients]\naddresses = ["@example.test"]\n', 'c.toml'), log)!;
  assert.equal((await policySession(catchAll, 'HELO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<anyone@example.test>\r\n')).at(-1), '250 2.1.5 Recipient ok');
});

test('policy.checks sets the order: the first refusal at a stage wins', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-build-'));
  const store = await openStateStore('sqlite', { dir });
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const base = '[domains]\nlocal = ["example.test"]\n[recipients]\naddresses = ["alice@example.test"]\n[greylist]\nenabled = true\n';
  const input = 'HELO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<bob@example.test>\r\n';
  const recipientsFirst = buildPipeline(parseConfig(`${base}[policy]\nchecks = ["recipients", "greylist"]\n`, 'a.toml'), log, store)!;
  assert.equal((await policySession(recipientsFirst, input, { address: '192.0.2.10' })).at(-1), '550 5.1.1 Recipient address rejected: user unknown');
  const greylistFirst = buildPipeline(parseConfig(`${base}[policy]\nchecks = ["greylist", "recipients"]\n`, 'b.toml'), log, store)!;
  assert.equal((await policySession(greylistFirst, input, { address: '192.0.2.20' })).at(-1), '451 4.7.1 Greylisted, please try again later');
});
