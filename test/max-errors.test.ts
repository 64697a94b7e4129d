// smtp.max_errors: what the documentation says is counted is what the machine counts. The replies
// that are no fault of the client (452 too many recipients, 452 4.3.1 spool low, 451 storage
// failure) must neither close a session at max_errors = 1 nor be described as counted.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { defaultConfig } from '../src/config/types.ts';
import { machineConfigFrom } from '../src/server/machine-config.ts';
import { MachineDriver } from './helpers/drive.ts';

function docBlock(): string {
  const docs = readFileSync(new URL('../docs/configuration.md', import.meta.url), 'utf8');
  const start = docs.indexOf('### `smtp.max_errors`');
  assert.ok(start >= 0);
  return docs.slice(start, docs.indexOf('\n### ', start + 1));
}

test('max_errors: 452 (recipients, spool low) and 451 (storage) are not counted, and the docs say so', () => {
  const cfg = defaultConfig();
  cfg.smtp.maxErrors = 1;
  cfg.smtp.maxRecipients = 1;
  cfg.domains.local = ['example.test'];
  const d = new MachineDriver(machineConfigFrom(cfg, { isTlsAvailable: false, maxPolicyRefusals: 3 }));
  const short = (): string[] => d.replies.map((r) => `${r.code} ${r.enhanced ?? ''}`.trim());
  d.send('EHLO c.example\r\n');
  d.step({ type: 'spool-space', nowMs: d.tick(), isLow: true });
  d.send('MAIL FROM:<a@c.example>\r\n');
  d.step({ type: 'spool-space', nowMs: d.tick(), isLow: false });
  d.send('MAIL FROM:<a@c.example>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n');
  d.send('DATA\r\nSubject: x\r\n\r\nx\r\n.\r\n');
  assert.ok(d.outputs.some((o) => o.type === 'commit'));
  d.step({ type: 'commit-failed', nowMs: d.tick(), reason: 'ENOSPC' });
  assert.deepEqual(short(), ['220', '250', '452 4.3.1', '250 2.1.0', '250 2.1.5', '452 4.5.3', '354', '451 4.3.0']);
  assert.equal(d.machine.session!.counters.errors, 0);
  assert.equal(d.isClosed, false);

  const doc = docBlock();
  assert.doesNotMatch(doc, /Protocol errors caused by the client \(4xx\/5xx replies\)/, 'not every 4xx/5xx counts');
  for (const code of ['`452` for too many recipients', '`452 4.3.1`', '`451`']) assert.ok(doc.includes(code), `${code} named as not counted`);
  assert.match(doc, /Not counted/);
});
