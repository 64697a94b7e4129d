// Portcullis DSNs handed to a real Postfix (a private instance, test/helpers/postfix.ts) the way
// the queue will send them: from the null reverse-path, to the original sender, with SMTPUTF8 and
// BODY=8BITMIME when the DSN says so. Postfix must accept every step, deliver the DSN, and the
// delivered message must still parse as the same multipart/report.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { simpleParser } from 'mailparser';
import { composeDsn, type ComposedDsn } from '../../src/delivery/dsn.ts';
import { hasPostfix, startPostfix } from '../helpers/postfix.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

const NOW = Date.UTC(2026, 11, 1, 12, 0, 0);

/** RFC 5321 4.5.2: a line starting with "." gets another one; the data ends with CRLF.CRLF. */
function dotStuffed(bytes: Buffer): Buffer {
  const text = bytes.toString('latin1').replace(/(^|\r\n)\./g, '$1..');
  return Buffer.from(`${text}.\r\n`, 'latin1');
}

async function send(port: number, dsn: ComposedDsn): Promise<string> {
  const c = await SmtpClient.connect(port);
  try {
    assert.equal((await c.reply())?.code, 220);
    await c.expect('EHLO mx.example.test\r\n', 250);
    const params = `${dsn.bodyType === '8BITMIME' ? ' BODY=8BITMIME' : ''}${dsn.smtputf8 ? ' SMTPUTF8' : ''}`;
    await c.expect(`MAIL FROM:<${dsn.reversePath}>${params}\r\n`, 250);
    await c.expect(`RCPT TO:<${dsn.recipient}>\r\n`, 250);
    await c.expect('DATA\r\n', 354);
    c.write(dotStuffed(dsn.bytes));
    const r = await c.reply();
    assert.equal(r?.code, 250, r?.text);
    await c.expect('QUIT\r\n', 221);
    return r!.text;
  } finally {
    c.close();
  }
}

test('dsn to postfix: a failure DSN and an SMTPUTF8 DSN are accepted from <> and delivered intact', { skip: hasPostfix() ? false : 'needs Postfix and root (scripts/test-deps.sh)' }, async (t) => {
  const pf = await startPostfix({ domains: ['sender.test'] });
  t.after(() => pf.stop());
  const original = Buffer.from('From: alice@sender.test\r\nTo: bob@dest.example\r\nSubject: report\r\nMessage-ID: <m1@sender.test>\r\n\r\nHello\r\n.leading dot\r\n');
  const failure = composeDsn({
    reportingMta: 'mx.example.test',
    queueId: 'Q1',
    reversePath: 'alice@sender.test',
    envid: 'ENV1',
    arrivalMs: NOW - 60_000,
    smtputf8: false,
    nowMs: NOW,
    content: original,
    recipients: [{ address: 'bob@dest.example', orcpt: { addrType: 'rfc822', address: 'bob@dest.example' }, action: 'failed', reply: { code: 550, enhanced: '5.1.1', lines: ['<bob@dest.example>: Recipient address rejected: User unknown'] }, remoteMta: 'mx.dest.example', lastAttemptMs: NOW }],
  })!;
  const utf8Content = Buffer.from('From: jörg@sender.test\r\nSubject: Grüße\r\n\r\nGrüße\r\n');
  const global = composeDsn({
    reportingMta: 'mx.example.test',
    queueId: 'Q2',
    reversePath: 'jörg@sender.test',
    arrivalMs: NOW - 60_000,
    smtputf8: true,
    nowMs: NOW,
    content: utf8Content,
    recipients: [{ address: 'δοκιμή@dest.example', action: 'delayed', reply: { code: 451, enhanced: '4.4.1', lines: ['connection timed out'] }, remoteMta: 'mx.dest.example', lastAttemptMs: NOW, willRetryUntilMs: NOW + 5 * 86_400_000 }],
  })!;
  assert.equal(global.smtputf8, true);

  assert.match(await send(pf.port, failure), /^250 2\.0\.0 Ok: queued as/);
  assert.match(await send(pf.port, global), /^250 2\.0\.0 Ok: queued as/);
  const got = await pf.waitForReceived(2);
  await pf.waitForLog(/to=<jörg@sender\.test>.*status=sent/);
  const byRecipient = new Map(got.map((m) => [m.recipient, m]));
  for (const [rcpt, dsn, reportType] of [['alice@sender.test', failure, 'delivery-status'], ['jörg@sender.test', global, 'global-delivery-status']] as const) {
    const m = byRecipient.get(rcpt);
    assert.ok(m, `delivered to ${rcpt}`);
    assert.equal(m.reversePath, '', 'from the null reverse-path');
    // Postfix stores with LF line ends; back to CRLF, the message must be the DSN as sent, after Postfix's trace fields.
    const stored = m.bytes.toString('utf8').replace(/\n/g, '\r\n');
    assert.ok(stored.endsWith(dsn.bytes.toString('utf8')), 'the DSN arrived byte for byte');
    const mail = await simpleParser(Buffer.from(stored, 'utf8'), { keepDeliveryStatus: true });
    assert.equal((mail.headers.get('content-type') as { params: Record<string, string> }).params['report-type'], reportType);
    assert.equal(mail.attachments.length, 2);
  }
  assert.match(pf.log(), /from=<>, size=\d+, nrcpt=1/);
});
