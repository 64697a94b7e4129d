// Postfix as the internal mail server behind Portcullis (the edge use case): `portcullis serve`
// accepts mail for corp.test and hands it over a fixed next hop (`smtp:[127.0.0.1]:PORT`) to a
// private Postfix (test/helpers/postfix.ts), which delivers to Maildirs with virtual(8). Checked:
// the message arrives byte for byte as the client sent it (a line holding only ".", lines starting
// with dots, 8-bit octets, a 990-octet line), and one accepted with bare line ends in
// `bare_line_endings = "normalize"` mode arrives as its canonical, stored form; a 5xx from Postfix
// for an unknown user fails that recipient only and its sender gets a failure DSN (delivered
// through the same Postfix, from <>, parsed with a real MIME parser), as does a 5xx to the final
// dot (Postfix's header_checks); a 4xx defers (no DSN, still queued) and the mail is delivered once
// Postfix accepts it. RFC 5321 4.5.2 (transparency),
// 6.1 (a 250 owns the message), RFC 3464 (the DSN fields).

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { simpleParser } from 'mailparser';
import type { QueueEntry } from '../../src/queue/manager.ts';
import { sendControl } from '../../src/server/control.ts';
import { runCli, startCliServer, type CliServer } from '../helpers/cli-server.ts';
import { hasPostfix, startPostfix, type PostfixInstance, type ReceivedMessage } from '../helpers/postfix.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

const SKIP = hasPostfix() ? false : 'needs Postfix and root (scripts/test-deps.sh)';
const WAIT_MS = 20_000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const crlf = (lines: Array<string | Buffer>): Buffer => Buffer.concat(lines.flatMap((l) => [typeof l === 'string' ? Buffer.from(l, 'utf8') : l, Buffer.from('\r\n')]));

/** Every octet from 0x80 to 0xFF: 8-bit content that is not even UTF-8. */
const HIGH_OCTETS = Buffer.from(Array.from({ length: 128 }, (_, i) => 0x80 + i));

/** The message as the client means it (canonical CRLF): dots, 8-bit, spaces, a long line, and a
 *  last line holding only a dot, right before the terminator. */
const DOTS_AND_8BIT = crlf([
  'From: Bob <bob@corp.test>',
  'To: Alice <alice@corp.test>',
  'Subject: dots and 8-bit',
  'Date: Wed, 02 Dec 2026 01:00:00 +0000',
  'Message-ID: <dots-8bit@corp.test>',
  'MIME-Version: 1.0',
  'Content-Type: text/plain; charset=utf-8',
  'Content-Transfer-Encoding: 8bit',
  '',
  'first line',
  '.',
  '..two dots',
  '.one dot',
  '...',
  '. a dot and a space',
  'Grüße, naïve café, ☃',
  HIGH_OCTETS,
  ' leading space',
  'trailing space ',
  '\ttab',
  'y'.repeat(990),
  '',
  '',
  'after two empty lines',
  '.',
]);

/** RFC 5321 4.5.2: a dot in front of every line that starts with one; then the terminator. */
function dotStuffed(content: Buffer): Buffer {
  const text = content.toString('latin1').replace(/^\./gm, '..');
  return Buffer.from(`${text}.\r\n`, 'latin1');
}

/** Bare LF and bare CR line ends (accepted only in "normalize" mode) and a dot after a bare LF,
 *  which is content, not stuffing: stored as its own line starting with a dot. */
const BARE_SENT = Buffer.from(
  'From: bob@corp.test\nTo: alice@corp.test\nSubject: bare line ends\nDate: Wed, 02 Dec 2026 01:00:00 +0000\nMessage-ID: <bare@corp.test>\n\n' +
    'line one\n.dot after a bare LF\nbare\rCR\r\nlast\r\n.\r\n',
  'latin1',
);
/** What the spool stores for it, and so what must arrive: every line end a CRLF. */
const BARE_STORED = crlf([
  'From: bob@corp.test',
  'To: alice@corp.test',
  'Subject: bare line ends',
  'Date: Wed, 02 Dec 2026 01:00:00 +0000',
  'Message-ID: <bare@corp.test>',
  '',
  'line one',
  '.dot after a bare LF',
  'bare',
  'CR',
  'last',
]);

/** Sends one message; resolves with Portcullis's queue id. `data` is sent as it is. */
async function send(port: number, from: string, to: string[], data: Buffer, mailParams = ''): Promise<string> {
  const c = await SmtpClient.connect(port);
  try {
    assert.equal((await c.reply())?.code, 220);
    await c.expect('EHLO client.corp.test\r\n', 250);
    await c.expect(`MAIL FROM:<${from}>${mailParams}\r\n`, 250);
    for (const r of to) await c.expect(`RCPT TO:<${r}>\r\n`, 250);
    await c.expect('DATA\r\n', 354);
    c.write(data);
    const r = await c.reply();
    assert.equal(r?.code, 250, r?.text);
    await c.expect('QUIT\r\n', 221);
    return /queued as ([A-Za-z0-9]+)$/.exec(r!.last)![1];
  } finally {
    c.close();
  }
}

/** The Maildir file as the bytes Postfix received (it stores LF line ends: back to CRLF). */
function wireForm(m: ReceivedMessage): Buffer {
  return Buffer.from(m.bytes.toString('latin1').replace(/\n/g, '\r\n'), 'latin1');
}

function bodyOf(message: Buffer): Buffer {
  const i = message.indexOf('\r\n\r\n');
  return i === -1 ? Buffer.alloc(0) : message.subarray(i + 4);
}

/** The two messages whose bytes must arrive unchanged; resolves with their queue ids. */
async function sendTransparencyMessages(server: CliServer): Promise<[string, string]> {
  const dotsId = await send(server.port, 'bob@corp.test', ['alice@corp.test'], dotStuffed(DOTS_AND_8BIT), ' BODY=8BITMIME');
  const bareId = await send(server.port, 'bob@corp.test', ['alice@corp.test'], BARE_SENT);
  return [dotsId, bareId];
}

function receivedWithId(got: ReceivedMessage[], messageId: string): ReceivedMessage {
  const m = got.find((r) => r.bytes.includes(`Message-ID: <${messageId}>`));
  assert.ok(m, `Postfix delivered <${messageId}>`);
  return m;
}

/** What Postfix stored for them is what the client sent (and, for the bare line ends, what the
 *  spool stores), after the trace fields Postfix and we add. */
function checkTransparency(got: ReceivedMessage[], dotsId: string, bareId: string): void {
  const dots = receivedWithId(got, 'dots-8bit@corp.test');
  assert.equal(dots.recipient, 'alice@corp.test');
  assert.equal(dots.reversePath, 'bob@corp.test');
  const dotsWire = wireForm(dots);
  assert.ok(dotsWire.subarray(dotsWire.length - DOTS_AND_8BIT.length).equals(DOTS_AND_8BIT), `the header and the body arrive as the client sent them; got:\n${dotsWire.toString('latin1')}`);
  assert.ok(bodyOf(dotsWire).equals(bodyOf(DOTS_AND_8BIT)), 'the body is byte-identical');
  assert.ok(dotsWire.includes(HIGH_OCTETS), 'the 8-bit octets are unchanged');
  assert.match(dotsWire.toString('latin1'), new RegExp(`^Received: from client\\.corp\\.test \\(\\[127\\.0\\.0\\.1\\]\\)\\r\\n\\tby mx\\.example\\.test \\(Portcullis\\) with ESMTP id ${dotsId}\\r\\n`, 'm'), 'after our own Received field');
  const bareWire = wireForm(receivedWithId(got, 'bare@corp.test'));
  assert.ok(bareWire.subarray(bareWire.length - BARE_STORED.length).equals(BARE_STORED), `bare line ends arrive as the canonical stored form; got:\n${bareWire.toString('latin1')}`);
  assert.ok(bareWire.toString('latin1').includes(`with ESMTP id ${bareId}\r\n`));
}

/** The SMTP commands of every session Postfix's smtpd logged (its "disconnect from" lines). */
function postfixCommands(pf: PostfixInstance): string {
  return (pf.log().match(/disconnect from [^\n]*/g) ?? []).join('\n');
}

async function entry(server: CliServer, queueId: string): Promise<QueueEntry | null> {
  return (await sendControl(server.spoolDir, { op: 'queue.show', args: [queueId] })) as QueueEntry | null;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, log: () => string): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; log:\n${log().slice(-4000)}`);
    await sleep(100);
  }
}

/** Whether every SMTP session Postfix's smtpd had has ended (so the next one starts a new smtpd). */
function isPostfixIdle(pf: PostfixInstance): boolean {
  const log = pf.log();
  const connects = log.match(/postfix\/smtpd\[\d+\]: connect from /g)?.length ?? 0;
  const disconnects = log.match(/postfix\/smtpd\[\d+\]: disconnect from /g)?.length ?? 0;
  return connects > 0 && connects === disconnects;
}

test('postfix as the internal SMTP server (BDAT, as it offers CHUNKING): byte-identical delivery, a 5xx bounces with a DSN, a 4xx defers', { skip: SKIP, timeout: 90_000 }, async (t) => {
  // Postfix refuses one user for now with a 4xx: an access map we rewrite later (and reload).
  const accessDir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-pf-access-'));
  t.after(() => rmSync(accessDir, { recursive: true, force: true }));
  chmodSync(accessDir, 0o755);
  const access = path.join(accessDir, 'access');
  writeFileSync(access, 'busy@corp.test 450 4.2.0 Mailbox busy, try again later\n', { mode: 0o644 });
  // And refuses one message after its data (cleanup's header_checks): a 5xx to the final dot. Not
  // in attached messages (nested_header_checks), or the DSN returning it would be refused too.
  const headerChecks = path.join(accessDir, 'header_checks');
  writeFileSync(headerChecks, '/^Subject: refused after the data$/ REJECT 5.7.1 Message content rejected\n', { mode: 0o644 });
  const pf = await startPostfix({
    domains: ['corp.test'],
    users: ['alice@corp.test', 'bob@corp.test', 'busy@corp.test'],
    extraMainCf: [`smtpd_recipient_restrictions = check_recipient_access texthash:${access}`, `header_checks = regexp:${headerChecks}`, 'nested_header_checks ='],
  });
  t.after(() => pf.stop());
  const server = await startCliServer({
    workers: 1,
    localDomains: ['corp.test'],
    routes: ['default = "refuse"', `local = "smtp:[127.0.0.1]:${pf.port}"`],
    smtpToml: ['bare_line_endings = "normalize"'],
  });
  t.after(() => server.cleanup());
  const logs = (): string => `${server.logText()}\n--- postfix ---\n${pf.log()}`;

  // A 4xx at RCPT defers: still queued, the reply kept, the next attempt later, no DSN.
  const busyId = await send(server.port, 'bob@corp.test', ['busy@corp.test'], dotStuffed(crlf(['Subject: busy', 'Message-ID: <busy@corp.test>', '', 'for later'])));
  const deferred = await waitFor('the 4xx to be recorded', async () => {
    const e = await entry(server, busyId);
    return e?.recipients[0].status === 'deferred' ? e : undefined;
  }, logs);
  const busyReply = deferred.recipients[0].lastReply!;
  assert.equal(busyReply.code, 450);
  assert.equal(busyReply.enhanced, '4.2.0');
  assert.match(busyReply.lines.join(' '), /Mailbox busy/);
  assert.ok(deferred.recipients[0].nextAttemptMs > Date.now() + 60_000, 'retried later (queue.min_backoff), not at once');
  await pf.waitForLog(/NOQUEUE: reject: RCPT from .*: 450 4\.2\.0 <busy@corp\.test>/);

  // Byte for byte: dots, 8-bit, a lone dot last; then the normalised bare line ends.
  const [dotsId, bareId] = await sendTransparencyMessages(server);
  // One recipient Postfix knows, one it refuses (550 5.1.1 at RCPT): one delivery, one bounce.
  const mixedId = await send(server.port, 'bob@corp.test', ['alice@corp.test', 'nobody@corp.test'], dotStuffed(crlf(['From: bob@corp.test', 'Subject: mixed', 'Message-ID: <mixed@corp.test>', '', 'to alice and nobody'])));

  // Refused by Postfix after the data (550 5.7.1): failed, and a second DSN to bob.
  const refusedId = await send(server.port, 'bob@corp.test', ['alice@corp.test'], dotStuffed(crlf(['From: bob@corp.test', 'Subject: refused after the data', 'Message-ID: <refused@corp.test>', '', 'Postfix says no at the dot'])));

  const got = await pf.waitForReceived(5, WAIT_MS);
  assert.ok(!got.some((m) => m.recipient === 'alice@corp.test' && m.bytes.includes('Message-ID: <refused@corp.test>')), 'the refused message is not delivered');
  const dsnFor = (queueId: string): ReceivedMessage => {
    const m = got.find((r) => r.recipient === 'bob@corp.test' && r.bytes.includes(`X-Portcullis-Queue-ID: ${queueId}`));
    assert.ok(m, `a DSN for ${queueId} to the sender; log:\n${logs()}`);
    return m;
  };
  checkTransparency(got, dotsId, bareId);
  const mixed = receivedWithId(got, 'mixed@corp.test');
  assert.equal(mixed.recipient, 'alice@corp.test');

  // The bounce: a failure DSN from <> to bob, through the same Postfix, for nobody only.
  const dsn = dsnFor(mixedId);
  assert.equal(dsn.reversePath, '', 'from the null reverse-path');
  const parsed = await simpleParser(wireForm(dsn), { keepDeliveryStatus: true });
  assert.match(String((parsed.headers.get('content-type') as { value: string }).value), /^multipart\/report$/);
  assert.match(String((parsed.headers.get('content-type') as { params: Record<string, string> }).params['report-type']), /^delivery-status$/);
  const status = parsed.attachments.find((a) => a.contentType === 'message/delivery-status');
  assert.ok(status, 'a message/delivery-status part');
  // Unfolded (RFC 5322 2.2.3): a long Diagnostic-Code is folded at 78 columns.
  const fields = status.content.toString().replace(/\r\n[ \t]+/g, ' ');
  assert.match(fields, /^Reporting-MTA: dns; ?mx\.example\.test$/m);
  assert.match(fields, new RegExp(`^X-Portcullis-Queue-ID: ${mixedId}$`, 'm'));
  assert.match(fields, /^Final-Recipient: rfc822; ?nobody@corp\.test$/m);
  assert.doesNotMatch(fields, /alice@corp\.test/, 'the delivered recipient is not reported');
  assert.match(fields, /^Action: failed$/m);
  assert.match(fields, /^Status: 5\.1\.1$/m);
  assert.match(fields, /^Remote-MTA: dns; ?127\.0\.0\.1$/m);
  assert.match(fields, /^Diagnostic-Code: smtp; ?550 5\.1\.1 <nobody@corp\.test>: Recipient address rejected: User unknown/m);
  const returned = parsed.attachments.find((a) => a.contentType === 'message/rfc822' || a.contentType === 'text/rfc822-headers');
  assert.ok(returned?.content.toString().includes('Message-ID: <mixed@corp.test>'), 'the DSN returns the message');
  // The 5xx after the data: the same kind of DSN, with Postfix's reply to the dot.
  const refusedDsn = await simpleParser(wireForm(dsnFor(refusedId)), { keepDeliveryStatus: true });
  const refusedFields = refusedDsn.attachments.find((a) => a.contentType === 'message/delivery-status')!.content.toString().replace(/\r\n[ \t]+/g, ' ');
  assert.match(refusedFields, /^Final-Recipient: rfc822; ?alice@corp\.test$/m);
  assert.match(refusedFields, /^Action: failed$/m);
  assert.match(refusedFields, /^Status: 5\.7\.1$/m);
  assert.match(refusedFields, /^Diagnostic-Code: smtp; ?550 5\.7\.1 Message content rejected$/m);
  await pf.waitForLog(/reject: header Subject: refused after the data/);
  assert.equal(got.filter((m) => m.recipient === 'bob@corp.test').length, 2, 'two DSNs: none for the deferred message');

  // Postfix accepts the busy user again; once our cached session to the old smtpd has ended
  // (idle), a flush delivers the deferred message.
  writeFileSync(access, '\n');
  await pf.reload();
  await waitFor('the cached SMTP sessions to Postfix to end', () => (isPostfixIdle(pf) ? true : undefined), logs);
  assert.match(postfixCommands(pf), / bdat=\d+/, 'Postfix offers CHUNKING, so the content went as BDAT');
  const flushed = await runCli(server.configPath, ['queue', 'flush', busyId]);
  assert.equal(flushed.code, 0, flushed.stderr);
  const all = await pf.waitForReceived(6, WAIT_MS);
  assert.ok(all.some((m) => m.recipient === 'busy@corp.test' && m.bytes.includes('Message-ID: <busy@corp.test>')), 'delivered after the flush');
  await waitFor('the queue to empty', async () => ((await sendControl(server.spoolDir, { op: 'queue.list', args: [] })) as unknown[]).length === 0 || undefined, logs);
  const listing = await runCli(server.configPath, ['queue', 'list']);
  assert.equal(listing.stdout.toString(), 'queue is empty\n');
  const lines = server.logText().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string; queueId?: string; status?: string; code?: number });
  const outcomes = (queueId: string): Array<[string, number | undefined]> => lines.filter((l) => l.queueId === queueId && /^queue: (?:delivered|deferred|failed)$/.test(l.msg)).map((l) => [l.msg, l.code]);
  // Each outcome recorded once, in order (messages are delivered in parallel: per message).
  assert.deepEqual(outcomes(busyId), [['queue: deferred', 450], ['queue: delivered', 250]]);
  assert.deepEqual(outcomes(dotsId), [['queue: delivered', 250]]);
  assert.deepEqual(outcomes(bareId), [['queue: delivered', 250]]);
  assert.deepEqual(outcomes(mixedId), [['queue: delivered', 250], ['queue: failed', 550]]);
  assert.deepEqual(outcomes(refusedId), [['queue: failed', 550]]);
});

test('postfix as the internal SMTP server without CHUNKING: the same bytes arrive through DATA (dot-stuffed on the wire)', { skip: SKIP, timeout: 60_000 }, async (t) => {
  const pf = await startPostfix({ domains: ['corp.test'], users: ['alice@corp.test', 'bob@corp.test'], extraMainCf: ['smtpd_discard_ehlo_keywords = chunking'] });
  t.after(() => pf.stop());
  const server = await startCliServer({
    workers: 1,
    localDomains: ['corp.test'],
    routes: ['default = "refuse"', `local = "smtp:[127.0.0.1]:${pf.port}"`],
    smtpToml: ['bare_line_endings = "normalize"'],
  });
  t.after(() => server.cleanup());
  const [dotsId, bareId] = await sendTransparencyMessages(server);
  checkTransparency(await pf.waitForReceived(2, WAIT_MS), dotsId, bareId);
  // Postfix logs a session's commands when it ends: once our cached session has gone idle.
  await waitFor('the cached SMTP session to Postfix to end', () => (isPostfixIdle(pf) ? true : undefined), () => pf.log());
  const commands = postfixCommands(pf);
  assert.match(commands, / data=\d+/);
  assert.doesNotMatch(commands, / bdat=/, 'no BDAT to a server that does not offer CHUNKING');
});
