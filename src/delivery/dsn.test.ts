// The DSN composer, every DSN parsed back with a real MIME parser (mailparser): the three parts
// in RFC 6522 order and type, every RFC 3464 field (per message and per recipient), the NOTIFY
// and null-reverse-path rules, what RET returns, RFC 6533 DSNs for SMTPUTF8 messages, 8-bit
// content, long diagnostics folded, and (fast-check) arbitrary replies, addresses, ENVID and
// ORCPT values never giving a malformed DSN or a header line of their own.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { simpleParser, type ParsedMail } from 'mailparser';
import { composeDsn, DSN_FULL_RETURN_MAX_BYTES, wantsDsn, type DsnInput, type DsnRecipient } from './dsn.ts';

const SEED = 20261203;
const ARRIVAL = Date.UTC(2026, 11, 1, 8, 0, 0);
const NOW = Date.UTC(2026, 11, 1, 9, 30, 0);
const ORIGINAL = Buffer.from(
  'Received: from client.example ([192.0.2.7])\r\n\tby mx.example.test (Portcullis) with ESMTP id Q123; Tue, 1 Dec 2026 08:00:00 +0000\r\n' +
    'From: Alice <alice@sender.example>\r\nTo: bob@dest.example\r\nSubject: Quarterly report\r\nMessage-ID: <m1@sender.example>\r\n\r\n' +
    'Hello Bob,\r\n..a line that starts with a dot\r\n\r\nregards\r\n',
);

function failed(address: string, over: Partial<DsnRecipient> = {}): DsnRecipient {
  return {
    address,
    action: 'failed',
    reply: { code: 550, enhanced: '5.1.1', lines: [`<${address}>: Recipient address rejected: User unknown in virtual mailbox table`] },
    remoteMta: 'mx1.dest.example',
    lastAttemptMs: NOW - 1000,
    ...over,
  };
}

function input(over: Partial<DsnInput> = {}): DsnInput {
  return { reportingMta: 'mx.example.test', queueId: 'Q123', reversePath: 'alice@sender.example', arrivalMs: ARRIVAL, smtputf8: false, recipients: [failed('bob@dest.example')], content: ORIGINAL, nowMs: NOW, ...over };
}

type Fields = Array<[string, string]>;

/** RFC 3464 2.1: blocks of header-style fields separated by blank lines; unfolded. */
function statusBlocks(text: string): Fields[] {
  assert.ok(!/\r(?!\n)|(?<!\r)\n/.test(text), 'only CRLF line ends');
  return text
    .replace(/\r\n$/, '')
    .split('\r\n\r\n')
    .map((block) =>
      block
        .replace(/\r\n(?=[ \t])/g, '')
        .split('\r\n')
        .map((line): [string, string] => {
          const m = /^([A-Za-z0-9-]+): (.*)$/.exec(line);
          assert.ok(m, `a field line: ${JSON.stringify(line)}`);
          return [m[1], m[2]];
        }),
    );
}

async function parse(bytes: Buffer): Promise<{ mail: ParsedMail; status: Fields[]; returned: { type: string; content: Buffer } }> {
  assertWellFormed(bytes);
  const mail = await simpleParser(bytes, { keepDeliveryStatus: true });
  assert.equal(mail.attachments.length, 2, 'delivery report and returned content');
  const [report, returned] = mail.attachments;
  assert.match(report.contentType, /^message\/(global-)?delivery-status$/);
  return { mail, status: statusBlocks(report.content.toString('utf8')), returned: { type: returned.contentType, content: returned.content } };
}

/** Canonical CRLF, no line over 998 octets, no NUL (RFC 5322 2.1.1, 2.3). */
function assertWellFormed(bytes: Buffer): void {
  assert.ok(bytes.subarray(-2).equals(Buffer.from('\r\n')), 'ends with CRLF');
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0) assert.fail('NUL in a DSN');
    if (bytes[i] === 0x0d) assert.equal(bytes[i + 1], 0x0a, `bare CR at ${i}`);
    if (bytes[i] === 0x0a) {
      assert.equal(bytes[i - 1], 0x0d, `bare LF at ${i}`);
      assert.ok(i - 1 - start <= 998, `a line of ${i - 1 - start} octets`);
      start = i + 1;
    }
  }
}

test('dsn: a failure is multipart/report with the text, the delivery report and the message, every field in place', async () => {
  const dsn = composeDsn(
    input({
      envid: 'QQ314159',
      recipients: [
        failed('bob@dest.example', { orcpt: { addrType: 'rfc822', address: 'Bob@Dest.Example' } }),
        failed('carol@dest.example', { reply: { code: 552, enhanced: '5.2.2', lines: ['Mailbox full', 'try later'] }, remoteMta: 'mx2.dest.example' }),
      ],
    }),
  );
  assert.ok(dsn !== null);
  assert.equal(dsn.reversePath, '');
  assert.equal(dsn.recipient, 'alice@sender.example');
  assert.equal(dsn.smtputf8, false);
  assert.equal(dsn.bodyType, '7BIT');
  assert.equal(dsn.returned, 'full');
  assert.deepEqual(dsn.reported, [0, 1]);
  const { mail, status, returned } = await parse(dsn.bytes);
  const ct = mail.headers.get('content-type') as { value: string; params: Record<string, string> };
  assert.equal(ct.value, 'multipart/report');
  assert.equal(ct.params['report-type'], 'delivery-status');
  assert.equal(mail.from?.value[0].address, 'MAILER-DAEMON@mx.example.test');
  assert.equal((mail.to as { value: { address: string }[] }).value[0].address, 'alice@sender.example');
  assert.equal(mail.subject, 'Delivery failure notice');
  assert.equal(mail.date?.getTime(), NOW);
  assert.equal(mail.messageId, '<Q123.dsn.1796117400000@mx.example.test>');
  assert.equal(mail.headers.get('auto-submitted'), 'auto-replied');
  // The human part comes first (RFC 6522 3) and names each recipient with its reply.
  assert.match(dsn.bytes.toString(), /--[^\r]+\r\nContent-Description: Notification\r\nContent-Type: text\/plain; charset=us-ascii/);
  const flat = mail.text!.replace(/\n/g, ' ');
  assert.match(flat, /could not be delivered/);
  assert.match(flat, /<bob@dest\.example>: failed \(from mx1\.dest\.example\): 550 5\.1\.1 <bob@dest\.example>: Recipient address/);
  assert.match(flat, /<carol@dest\.example>: failed \(from mx2\.dest\.example\): 552 5\.2\.2 Mailbox full try later/);
  assert.deepEqual(status, [
    [['Reporting-MTA', 'dns; mx.example.test'], ['X-Portcullis-Queue-ID', 'Q123'], ['Original-Envelope-Id', 'QQ314159'], ['Arrival-Date', 'Tue, 1 Dec 2026 08:00:00 +0000']],
    [
      ['Original-Recipient', 'rfc822; Bob@Dest.Example'],
      ['Final-Recipient', 'rfc822; bob@dest.example'],
      ['Action', 'failed'],
      ['Status', '5.1.1'],
      ['Remote-MTA', 'dns; mx1.dest.example'],
      ['Diagnostic-Code', 'smtp; 550 5.1.1 <bob@dest.example>: Recipient address rejected: User unknown in virtual mailbox table'],
      ['Last-Attempt-Date', 'Tue, 1 Dec 2026 09:29:59 +0000'],
    ],
    [
      ['Final-Recipient', 'rfc822; carol@dest.example'],
      ['Action', 'failed'],
      ['Status', '5.2.2'],
      ['Remote-MTA', 'dns; mx2.dest.example'],
      ['Diagnostic-Code', 'smtp; 552 5.2.2 Mailbox full try later'],
      ['Last-Attempt-Date', 'Tue, 1 Dec 2026 09:29:59 +0000'],
    ],
  ]);
  assert.equal(returned.type, 'message/rfc822');
  assert.ok(returned.content.equals(ORIGINAL), 'the message comes back byte for byte');
});

test('dsn: a delay warning has Will-Retry-Until and returns the header section only', async () => {
  const until = ARRIVAL + 5 * 86_400_000;
  const dsn = composeDsn(
    input({ recipients: [{ address: 'bob@dest.example', action: 'delayed', reply: { code: 451, enhanced: '4.7.1', lines: ['Greylisted'] }, remoteMta: 'mx1.dest.example', lastAttemptMs: NOW, willRetryUntilMs: until }] }),
  )!;
  assert.equal(dsn.returned, 'headers');
  const { mail, status, returned } = await parse(dsn.bytes);
  assert.equal(mail.subject, 'Delivery delay notice (no action needed yet)');
  assert.match(mail.text!, /Delivery will be tried until Sun, 6 Dec 2026 08:00:00 \+0000/);
  assert.deepEqual(status[1], [
    ['Final-Recipient', 'rfc822; bob@dest.example'],
    ['Action', 'delayed'],
    ['Status', '4.7.1'],
    ['Remote-MTA', 'dns; mx1.dest.example'],
    ['Diagnostic-Code', 'smtp; 451 4.7.1 Greylisted'],
    ['Last-Attempt-Date', 'Tue, 1 Dec 2026 09:30:00 +0000'],
    ['Will-Retry-Until', 'Sun, 6 Dec 2026 08:00:00 +0000'],
  ]);
  assert.equal(returned.type, 'text/rfc822-headers');
  assert.equal(returned.content.toString(), ORIGINAL.toString().split('\r\n\r\n')[0] + '\r\n');
});

test('dsn: success and relayed notices only when NOTIFY=SUCCESS; a local reply is X-Portcullis, without Remote-MTA', async () => {
  const delivered: DsnRecipient = { address: 'bob@example.test', action: 'delivered', reply: { code: 250, enhanced: '2.0.0', lines: ['Saved'] }, remoteMta: null, lastAttemptMs: NOW };
  assert.equal(composeDsn(input({ recipients: [delivered] })), null, 'the default NOTIFY does not ask for success');
  const dsn = composeDsn(input({ recipients: [{ ...delivered, notify: ['SUCCESS'] }, { address: 'x@relay.example', notify: ['SUCCESS', 'FAILURE'], action: 'relayed', reply: { code: 250, enhanced: null, lines: ['ok'] }, remoteMta: 'old.relay.example', lastAttemptMs: NOW }] }))!;
  const { mail, status, returned } = await parse(dsn.bytes);
  assert.equal(mail.subject, 'Delivery notice: relayed onwards');
  assert.deepEqual(status[1].filter(([n]) => n !== 'Last-Attempt-Date'), [['Final-Recipient', 'rfc822; bob@example.test'], ['Action', 'delivered'], ['Status', '2.0.0'], ['Diagnostic-Code', 'X-Portcullis; 250 2.0.0 Saved']]);
  assert.deepEqual(status[2].filter(([n]) => n !== 'Last-Attempt-Date'), [['Final-Recipient', 'rfc822; x@relay.example'], ['Action', 'relayed'], ['Status', '2.0.0'], ['Remote-MTA', 'dns; old.relay.example'], ['Diagnostic-Code', 'smtp; 250 ok']]);
  assert.equal(returned.type, 'text/rfc822-headers', 'no failure: headers only (RFC 3461 4.3)');
});

test('dsn: never for the null reverse-path; NOTIFY=NEVER honoured; one DSN covers the recipients that asked', () => {
  assert.equal(composeDsn(input({ reversePath: '' })), null);
  assert.equal(composeDsn(input({ recipients: [failed('bob@dest.example', { notify: 'NEVER' })] })), null);
  assert.equal(composeDsn(input({ recipients: [failed('bob@dest.example', { notify: ['DELAY', 'SUCCESS'] })] })), null);
  const dsn = composeDsn(input({ recipients: [failed('a@d.example', { notify: 'NEVER' }), failed('b@d.example'), failed('c@d.example', { notify: ['FAILURE'] })] }))!;
  assert.deepEqual(dsn.reported, [1, 2]);
  assert.ok(!dsn.bytes.includes('a@d.example'));
  assert.equal(wantsDsn(undefined, 'delayed'), true, 'without NOTIFY: failures and delays');
  assert.equal(wantsDsn(undefined, 'delivered'), false);
  assert.equal(wantsDsn(['SUCCESS'], 'relayed'), true);
});

test(`dsn: RET: HDRS gives headers, FULL the whole message, none the whole message up to ${DSN_FULL_RETURN_MAX_BYTES} octets`, async () => {
  const big = Buffer.concat([ORIGINAL, Buffer.from(`${'x'.repeat(998)}\r\n`.repeat(60))]);
  assert.equal(composeDsn(input({ ret: 'HDRS' }))!.returned, 'headers');
  assert.equal(composeDsn(input({ content: big }))!.returned, 'headers');
  assert.equal(composeDsn(input())!.returned, 'full');
  const full = composeDsn(input({ ret: 'FULL', content: big }))!;
  assert.equal(full.returned, 'full');
  const { returned } = await parse(full.bytes);
  assert.ok(returned.content.equals(big));
  assert.equal(composeDsn(input({ bodyType: 'BINARYMIME' }))!.returned, 'headers', 'a binary body cannot travel in message/rfc822 over 8BITMIME');
});

test('dsn: SMTPUTF8 messages get RFC 6533 DSNs: global delivery status, UTF-8 addresses, message/global', async () => {
  const content = Buffer.from('From: Jöran <jöran@exämple.test>\r\nSubject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nGrüße\r\n');
  const dsn = composeDsn(
    input({
      smtputf8: true,
      reversePath: 'jöran@exämple.test',
      content,
      recipients: [failed('用户@例子.example', { orcpt: { addrType: 'utf-8', address: Buffer.from('用户@例子.example').toString('latin1') }, reply: { code: 550, enhanced: '5.1.1', lines: ['用户 unknown'] } })],
    }),
  )!;
  assert.equal(dsn.smtputf8, true);
  assert.equal(dsn.bodyType, '8BITMIME');
  assert.equal(dsn.recipient, 'jöran@exämple.test');
  const { mail, status, returned } = await parse(dsn.bytes);
  assert.equal((mail.headers.get('content-type') as { params: Record<string, string> }).params['report-type'], 'global-delivery-status');
  assert.equal((mail.to as { value: { address: string }[] }).value[0].address, 'jöran@exämple.test');
  assert.match(mail.text!, /<用户@例子\.example>: failed/);
  assert.deepEqual(status[1].slice(0, 2), [['Original-Recipient', 'utf-8; 用户@例子.example'], ['Final-Recipient', 'utf-8; 用户@例子.example']]);
  assert.deepEqual(status[1].find(([n]) => n === 'Diagnostic-Code'), ['Diagnostic-Code', 'smtp; 550 5.1.1 用户 unknown']);
  assert.equal(returned.type, 'message/global');
  assert.ok(returned.content.equals(content));
  assert.equal(composeDsn(input({ smtputf8: true, ret: 'HDRS', content }))!.bytes.includes('Content-Type: message/global-headers'), true);
});

test('dsn: 8-bit content of an ASCII-envelope message comes back 8bit; non-ASCII in replies becomes "?"', async () => {
  const content = Buffer.concat([Buffer.from('Subject: x\r\nContent-Type: text/plain; charset=latin1\r\n\r\n'), Buffer.from([0x47, 0x72, 0xfc, 0xdf, 0x65, 0x0d, 0x0a])]);
  const dsn = composeDsn(input({ bodyType: '8BITMIME', content, recipients: [failed('bob@dest.example', { reply: { code: 550, enhanced: '5.7.1', lines: ['refusé ‮ here'] } })] }))!;
  assert.equal(dsn.bodyType, '8BITMIME');
  assert.equal(dsn.smtputf8, false);
  const { status, returned, mail } = await parse(dsn.bytes);
  assert.ok(returned.content.equals(content));
  assert.deepEqual(status[1].find(([n]) => n === 'Diagnostic-Code'), ['Diagnostic-Code', 'smtp; 550 5.7.1 refus? ? here']);
  assert.match(dsn.bytes.toString('latin1'), /Content-Type: message\/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n/);
  assert.match(mail.text!, /refus\? \? here/);
});

test('dsn: a long diagnostic is folded within 78 columns and unfolds back to the reply text', async () => {
  const words = Array.from({ length: 120 }, (_, i) => `word${i}`);
  const long = `${'z'.repeat(1500)}`;
  const dsn = composeDsn(input({ recipients: [failed('bob@dest.example', { reply: { code: 550, enhanced: '5.7.1', lines: [words.slice(0, 60).join(' '), words.slice(60).join(' '), long] } })] }))!;
  const text = dsn.bytes.toString();
  const section = text.slice(text.indexOf('Diagnostic-Code:'), text.indexOf('Last-Attempt-Date:'));
  const lines = section.split('\r\n').filter((l) => l !== '');
  assert.ok(lines.length > 10, 'folded');
  for (const l of lines.slice(0, -1)) assert.ok(l.length <= 78, `${l.length}: ${l}`);
  assert.ok(lines.slice(1).every((l) => l.startsWith(' ')), 'continuations start with a space');
  const { status } = await parse(dsn.bytes);
  const diag = status[1].find(([n]) => n === 'Diagnostic-Code')![1];
  assert.ok(diag.startsWith(`smtp; 550 5.7.1 ${words.join(' ')} zzzz`));
});

test('dsn: replies, ENVID and ORCPT holding CR, LF or NUL cannot add a header field or a MIME part', async () => {
  const evil = 'x\r\nBcc: victim@else.example\r\n\r\n--boundary\r\nContent-Type: text/html\r\n';
  const dsn = composeDsn(
    input({
      envid: 'id\r\nX-Injected: 1',
      recipients: [failed('bob@dest.example', { orcpt: { addrType: 'rfc822\r\nX-Injected', address: 'a\r\nX-Injected: 2@b' }, reply: { code: 550, enhanced: '5.0.0', lines: [evil, '\0nul'] }, remoteMta: 'evil\r\nX-Injected: 3' })],
    }),
  )!;
  const text = dsn.bytes.toString();
  assert.ok(!/^(Bcc|X-Injected):/im.test(text));
  const { mail, status } = await parse(dsn.bytes);
  assert.equal(mail.headers.get('bcc'), undefined);
  assert.deepEqual(status[0][2], ['Original-Envelope-Id', 'id+0D+0AX-Injected:+201']);
  assert.deepEqual(status[1][0], ['Original-Recipient', 'utf-8; a\\x{0D}\\x{0A}X-Injected:\\x{20}2@b']);
  assert.deepEqual(status[1].find(([n]) => n === 'Remote-MTA'), ['Remote-MTA', 'dns; evilX-Injected:3']);
});

test('dsn: property: arbitrary replies, addresses, ENVID and ORCPT give a well-formed DSN with exactly its own fields', async () => {
  const anyText = fc.string({ unit: fc.oneof(fc.constantFrom('\r', '\n', '\0', ' ', ':', '\\', '"', '<', '>', ';', '=', '-', '\u202e', 'é', '用'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })), maxLength: 300 });
  const recipient = fc.record({
    address: anyText,
    action: fc.constantFrom('failed', 'delayed', 'delivered', 'relayed') as fc.Arbitrary<DsnRecipient['action']>,
    notify: fc.constantFrom(undefined, ['SUCCESS', 'FAILURE', 'DELAY'] as const),
    orcpt: fc.option(fc.record({ addrType: anyText, address: anyText }), { nil: undefined }),
    reply: fc.option(fc.record({ code: fc.integer({ min: 0, max: 999 }), enhanced: fc.option(anyText, { nil: null }), lines: fc.array(anyText, { maxLength: 4 }) }), { nil: null }),
    remoteMta: fc.option(anyText, { nil: null }),
    lastAttemptMs: fc.option(fc.integer({ min: 0, max: 4e12 }), { nil: null }),
    willRetryUntilMs: fc.option(fc.integer({ min: 0, max: 4e12 }), { nil: null }),
  });
  const KNOWN = new Set(['Reporting-MTA', 'X-Portcullis-Queue-ID', 'Original-Envelope-Id', 'Arrival-Date', 'Original-Recipient', 'Final-Recipient', 'Action', 'Status', 'Remote-MTA', 'Diagnostic-Code', 'Last-Attempt-Date', 'Will-Retry-Until']);
  await fc.assert(
    fc.asyncProperty(fc.array(recipient, { minLength: 1, maxLength: 3 }), fc.option(anyText, { nil: undefined }), fc.boolean(), anyText, async (recipients, envid, smtputf8, reversePath) => {
      const dsn = composeDsn(input({ recipients: recipients.map((r) => ({ ...r, notify: r.notify === undefined ? undefined : [...r.notify] })), envid, smtputf8, reversePath: reversePath === '' ? 'a@b.example' : reversePath }));
      const asked = recipients.filter((r) => wantsDsn(r.notify === undefined ? undefined : [...r.notify], r.action)).length;
      if (dsn === null) return assert.equal(asked, 0);
      const { mail, status } = await parse(dsn.bytes);
      assert.equal(status.length, 1 + asked);
      for (const block of status) for (const [name] of block) assert.ok(KNOWN.has(name), name);
      const top = [...mail.headers.keys()].sort();
      assert.deepEqual(top, ['auto-submitted', 'content-transfer-encoding', 'content-type', 'date', 'from', 'message-id', 'mime-version', 'subject', 'to'].filter((h) => h !== 'content-transfer-encoding' || mail.headers.has(h)));
      assert.equal(dsn.smtputf8, smtputf8);
      if (!smtputf8) assert.ok(!dsn.bytes.subarray(0, dsn.bytes.indexOf('Content-Description: Returned')).some((b) => b > 0x7f), 'an ASCII DSN apart from the returned content');
    }),
    { seed: SEED, numRuns: 300 },
  );
});

test('dsn: a reply that quotes the boundary the DSN would use gets another boundary', async () => {
  const first = composeDsn(input())!;
  const boundary = /boundary="([^"]+)"/.exec(first.bytes.toString())![1];
  const quoting = composeDsn(input({ recipients: [failed('bob@dest.example', { reply: { code: 550, enhanced: '5.0.0', lines: [`--${boundary}`] } })] }))!;
  const chosen = /boundary="([^"]+)"/.exec(quoting.bytes.toString())![1];
  assert.equal(chosen, `${boundary}-1`);
  const { status } = await parse(quoting.bytes);
  assert.equal(status.length, 2);
});
