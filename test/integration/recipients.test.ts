// Recipient table: unknown users of a local domain are refused at RCPT in the session (no
// backscatter), over a real socket, through the configured pipeline; refusals are counted.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { defaultConfig } from '../../src/config/types.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { parseRecipientTable } from '../../src/policy/checks/recipients/check.ts';
import { startTestServer } from '../helpers/server.ts';
import { runSocket } from '../helpers/socket-runner.ts';
import { parseTranscript } from '../helpers/transcript.ts';

const DIALOGUE = `
S: 220 *
C: HELO client.example
S: 250 *
C: MAIL FROM:<a@client.example>
S: 250 *
C: RCPT TO:<alice@example.test>
S: 250 2.1.5 Recipient ok
C: RCPT TO:<ALICE@Example.Test>
S: 250 2.1.5 Recipient ok
C: RCPT TO:<prvs=0123abcdef=alice@example.test>
S: 250 2.1.5 Recipient ok
C: RCPT TO:<anyone@catchall.test>
S: 250 2.1.5 Recipient ok
C: RCPT TO:<Postmaster>
S: 250 2.1.5 Recipient ok
C: RCPT TO:<postmaster@example.test>
S: 250 2.1.5 Recipient ok
C: RCPT TO:<someone@elsewhere.example>
S: 250 2.1.5 Recipient ok
C: RCPT TO:<mallory@example.test>
S: 550 5.1.1 Recipient address rejected: user unknown
C: RSET
S: 250 *
C: MAIL FROM:<b@client.example>
S: 250 *
C: RCPT TO:<mallory@example.test>
S: 550 5.1.1 Recipient address rejected: user unknown
C: RCPT TO:<trudy@example.test>
S: 550 5.1.1 Recipient address rejected: user unknown
S: 421 4.7.0 Too many refusals in one session, closing connection
@closed
`;

test('recipient table: unknown users refused at RCPT; refusals survive RSET and end the session', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-rcpt-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const table = path.join(dir, 'recipients.txt');
  writeFileSync(table, '# users\nalice@example.test\npostmaster@example.test\n\n@catchall.test\n');
  const transcript = parseTranscript('recipients', DIALOGUE);
  const cfg = transcript.config;
  cfg.domains.local = ['example.test', 'catchall.test'];
  cfg.recipients.table = table;
  const pipeline = buildPipeline(cfg, pino({ level: 'silent' }));
  assert.ok(pipeline !== null);
  const server = await startTestServer(cfg, { policy: pipeline });
  t.after(() => server.stop());
  await runSocket(transcript, server.port, server.spoolDir);
});

test('recipient table syntax errors name the file and line', () => {
  assert.throws(() => parseRecipientTable('alice@example.test\nnot an address\n', 'r.txt'), /r\.txt:2: expected an address or @domain/);
  const t = parseRecipientTable('Alice@Example.TEST # comment\n@Other.Test\n', 'r.txt');
  assert.ok(t.addresses.has('alice@example.test'));
  assert.ok(t.catchAllDomains.has('other.test'));
});

test('no table configured: no pipeline, no round trips', () => {
  assert.equal(buildPipeline(defaultConfig(), pino({ level: 'silent' })), null);
});
