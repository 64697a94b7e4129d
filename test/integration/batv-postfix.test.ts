// The BATV round trip against a real Postfix (a private instance, test/helpers/postfix.ts) as the
// remote MX that cannot deliver: mail leaves with a BATV-signed reverse-path (signed here as the
// delivery path will sign it), Postfix accepts it, fails the recipient, and sends its own bounce
// to the signed address through its relayhost, a real Portcullis with the BATV check: accepted.
// The same bounce to the unsigned address (backscatter of mail we never sent) is refused 550 5.7.1,
// which Postfix logs. The Postfix helper's other options are exercised on the way (users: an
// unknown user refused at RCPT).

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { parseConfig } from '../../src/config/load.ts';
import { batvPolicy, loadBatvKeys, signReversePath, stripBatvTag } from '../../src/delivery/batv.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { hasPostfix, startPostfix } from '../helpers/postfix.ts';
import { startTestServer } from '../helpers/server.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

const SKIP = hasPostfix() ? false : 'needs Postfix and root (scripts/test-deps.sh)';
const WAIT_MS = 20_000;

async function sendMail(port: number, from: string, to: string, subject: string): Promise<void> {
  const c = await SmtpClient.connect(port);
  try {
    assert.equal((await c.reply())?.code, 220);
    await c.expect('EHLO mx.sender.test\r\n', 250);
    await c.expect(`MAIL FROM:<${from}>\r\n`, 250);
    await c.expect(`RCPT TO:<${to}>\r\n`, 250);
    await c.expect('DATA\r\n', 354);
    await c.expect(`From: ${stripBatvTag(from)}\r\nTo: ${to}\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@sender.test>\r\n\r\nhello\r\n.\r\n`, 250);
    await c.expect('QUIT\r\n', 221);
  } finally {
    c.close();
  }
}

/** Messages in the Portcullis spool: reverse-path, recipients, content. */
async function spooled(spoolDir: string): Promise<Array<{ reversePath: string; recipients: string[]; content: string }>> {
  const out = [];
  for await (const e of scanSpool(spoolDir)) {
    const m = await readMessage(spoolDir, e.envelope.queueId, e.location);
    out.push({ reversePath: e.envelope.reversePath, recipients: e.envelope.recipients.map((r) => r.address), content: m!.content.toString('utf8') });
  }
  return out;
}

test('batv round trip with Postfix: its bounce to the signed address is accepted, one to the plain address refused', { skip: SKIP }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-batv-pf-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'batv.key'), 'round-trip-secret-0123456789\n');
  const cfg = parseConfig(`
[domains]
local = ["sender.test"]
[batv]
domains = ["sender.test"]
keys = [{ id = 0, secret_file = ${JSON.stringify(path.join(dir, 'batv.key'))} }]
`, 'batv.toml');
  cfg.tls.enabled = false;
  const pipeline = buildPipeline(cfg, pino({ level: 'silent' }));
  const portcullis = await startTestServer(cfg, { policy: pipeline! });
  t.after(() => portcullis.stop());

  const pf = await startPostfix({ domains: ['postfix.test'], users: ['known@postfix.test'], bounceUsers: ['gone@postfix.test'], relay: { host: '127.0.0.1', port: portcullis.port } });
  t.after(() => pf.stop());

  // The helper's `users`: Postfix refuses an unknown user in the session.
  const c = await SmtpClient.connect(pf.port);
  await c.reply();
  await c.expect('EHLO mx.sender.test\r\n', 250);
  await c.expect('MAIL FROM:<alice@sender.test>\r\n', 250);
  const r = await c.command('RCPT TO:<nobody@postfix.test>');
  assert.match(r!.text, /^550 5\.1\.1 /);
  c.close();

  const signed = signReversePath('alice@sender.test', batvPolicy(cfg.batv, loadBatvKeys(cfg.batv.keys)), Date.now());
  assert.match(signed, /^prvs=0/);
  await sendMail(pf.port, signed, 'gone@postfix.test', 'signed');
  await sendMail(pf.port, 'alice@sender.test', 'gone@postfix.test', 'forged');

  // The bounce of the unsigned mail: Portcullis refuses it; Postfix logs the refusal of its DSN.
  const refused = await pf.waitForLog(/to=<alice@sender\.test>.*said: 550 5\.7\.1 Bounce rejected/, WAIT_MS);
  assert.match(refused, /status=bounced/);
  // The bounce of the signed mail: accepted and stored, addressed to the tag.
  const end = Date.now() + WAIT_MS;
  let bounces: Awaited<ReturnType<typeof spooled>> = [];
  while ((bounces = (await spooled(portcullis.spoolDir)).filter((m) => m.reversePath === '')).length === 0) {
    if (Date.now() > end) assert.fail(`no bounce reached Portcullis; Postfix log:\n${pf.log()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(bounces.length, 1);
  assert.deepEqual(bounces[0].recipients, [signed]);
  assert.match(bounces[0].content, /Content-Type: multipart\/report; report-type=delivery-status/);
  assert.match(bounces[0].content, /Final-Recipient: rfc822; gone@postfix\.test/);
  assert.match(bounces[0].content, /Subject: signed/, 'it is the bounce of the signed message');
  assert.equal(stripBatvTag(bounces[0].recipients[0]), 'alice@sender.test', 'delivery strips the tag');
});
