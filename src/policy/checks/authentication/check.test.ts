// The authentication check on its own: DMARC enforcement per policy and pct (RFC 7489 6.6.4), the
// Authentication-Results field as a valid header field whatever the results hold, SPF evaluated
// in the thread when the SPF check is off (dnsmasq on loopback), and a DNS server that never
// answers: temperror results and the message accepted, even with dmarc.enforce.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, test } from 'node:test';
import { startDnsServer, type DnsTestServer } from '../../../../test/helpers/dns-server.ts';
import { contentMessage } from '../../../message/content.ts';
import { parseFields } from '../../../message/header.ts';
import { parseMailbox } from '../../../protocol/address.ts';
import type { PolicyVerdict } from '../../../protocol/machine.ts';
import { newSessionSecurity, type Transaction } from '../../../protocol/session.ts';
import type { CheckContext } from '../../check.ts';
import { authenticationCheck, enforcedAction, formatAuthResults, type AuthenticationOptions } from './check.ts';

const HOST = 'mx.example.test';
let dns: DnsTestServer;

before(async () => {
  dns = await startDnsServer({
    zones: ['spf.test', 'strict.test'],
    records: ['txt-record=spf.test,"v=spf1 ip4:192.0.2.25 -all"', 'txt-record=_dmarc.spf.test,"v=DMARC1; p=reject"', 'txt-record=_dmarc.strict.test,"v=DMARC1; p=reject"'],
  });
});
after(async () => {
  await dns.stop();
});

function options(over: Partial<AuthenticationOptions> = {}): AuthenticationOptions {
  return { dns: { servers: [dns.server], timeoutMs: 1000, tries: 1 }, hostname: HOST, isArc: true, isDmarc: true, isEnforcing: true, quarantineAction: 'continue', timeoutMs: 5000, isSpfChecked: false, ...over };
}

function contextFor(from: string, mailFrom: string, addedHeaders: string[] = []): CheckContext {
  const session = newSessionSecurity({ id: 'S', peer: { address: '192.0.2.25', port: 1 }, local: { address: '127.0.0.1', port: 25 }, isRelayClient: false, nowMs: 0 });
  session.helo = { verb: 'EHLO', name: 'client.spf.test' };
  const transaction: Transaction = { kind: 'open', seq: 1, reversePath: parseMailbox(mailFrom, true), body: '7BIT', smtputf8: false, declaredSize: null, recipients: [], usedBdat: false, addedHeaders, reader: { kind: 'command' }, content: null, spilled: null, headerProbeBytes: 0, reservedBytes: 0 };
  const header = Buffer.from(`Received: from client.spf.test\r\nFrom: <${from}>\r\nSubject: x\r\n\r\n`);
  const body = Buffer.from('hello\r\n');
  const message = contentMessage({ fields: parseFields(header), size: header.length + body.length, body: { kind: 'memory', chunks: [body] } }, null);
  return { stage: 'content', session, transaction, recipient: null, heloName: 'client.spf.test', message, nowMs: 0 };
}

function fieldOf(v: PolicyVerdict): string {
  assert.ok(v.action === 'continue', `continue, got ${JSON.stringify(v)}`);
  const add = v.edits?.headers?.find((e) => e.op === 'add');
  assert.ok(add !== undefined && add.op === 'add');
  return add.field.replace(/\r\n(?=[ \t])/g, '');
}

test('authentication: enforcement by policy, quarantine_action and pct', () => {
  const never = (): number => 0.999;
  const always = (): number => 0;
  assert.equal(enforcedAction('reject', null, 'continue', never), 'reject');
  assert.equal(enforcedAction('REJECT', 100, 'continue', never), 'reject');
  assert.equal(enforcedAction('quarantine', null, 'continue', never), 'continue');
  assert.equal(enforcedAction('quarantine', null, 'quarantine', never), 'quarantine');
  assert.equal(enforcedAction('quarantine', null, 'reject', never), 'reject');
  assert.equal(enforcedAction('none', null, 'reject', never), 'continue');
  // pct=20: a draw of 0 is within the 20 %, 0.999 is not (then one step lower).
  assert.equal(enforcedAction('reject', 20, 'quarantine', always), 'reject');
  assert.equal(enforcedAction('reject', 20, 'quarantine', never), 'quarantine');
  assert.equal(enforcedAction('quarantine', 0, 'reject', always), 'continue');
});

test('authentication: the field is one valid header field whatever the results hold', () => {
  const field = formatAuthResults(HOST, [
    { method: 'spf', result: 'pass', comment: '', props: [['smtp.mailfrom', 'spf.test']] },
    { method: 'dkim', result: 'neutral', comment: 'no key (\\ \r\n) ' + 'x'.repeat(2000), props: [['header.i', '@spf.test'], ['header.s', 'a b"c\r\nd']] },
    { method: 'dmarc', result: 'fail', comment: 'p=REJECT', props: [['header.from', 'j\u00f6rg.test']] },
  ]);
  for (const [i, line] of field.split('\r\n').entries()) {
    assert.ok(/^[\x09\x20-\x7e]*$/.test(line) && line.length <= 998, `line ${i}: ${JSON.stringify(line)}`);
    if (i > 0) assert.match(line, /^[ \t]+\S/);
  }
  assert.match(field, /^Authentication-Results: mx\.example\.test;\r\n spf=pass smtp\.mailfrom=spf\.test;\r\n dkim=neutral /);
  assert.match(field.replace(/\r\n /g, ' '), /header\.i=@spf\.test header\.s="a b\\"c d"; dmarc=fail \(p=REJECT\) header\.from="j\?rg\.test"$/);
});

test('authentication: with the SPF check off, SPF is evaluated here and aligns DMARC', async () => {
  const check = authenticationCheck(options());
  const v = await check.run(contextFor('a@spf.test', 'a@spf.test'), AbortSignal.timeout(5000));
  assert.match(fieldOf(v), /; spf=pass smtp\.mailfrom=spf\.test; dkim=none \(message not signed\); arc=none; dmarc=pass \(p=REJECT arc=none\) header\.from=spf\.test/);
  const refused = await check.run(contextFor('a@strict.test', 'a@spf.test'), AbortSignal.timeout(5000));
  assert.equal(refused.action, 'reject');
  assert.ok(refused.action === 'reject' && /dmarc fail for strict\.test under p=reject/.test(refused.reason));
});

test('authentication: the SPF check\'s Received-SPF result is used, not evaluated again', async () => {
  const check = authenticationCheck(options({ isSpfChecked: true }));
  const before = dns.queryCount();
  const received = 'Received-SPF: pass (mx: ok) client-ip=192.0.2.25; envelope-from="a@spf.test"; helo=client.spf.test; receiver=mx; identity=mailfrom;';
  const v = await check.run(contextFor('a@spf.test', 'a@spf.test', [received]), AbortSignal.timeout(5000));
  assert.match(fieldOf(v), /; spf=pass smtp\.mailfrom=spf\.test; .*dmarc=pass/);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(dns.queryCount() - before, 1, 'only the DMARC record was asked');
});

test('authentication: a DNS server that never answers gives temperror and accepts, even when enforcing', async (t) => {
  const sock = dgram.createSocket('udp4');
  sock.on('message', () => {});
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => sock.close(() => resolve())));
  const check = authenticationCheck(options({ dns: { servers: [`127.0.0.1:${sock.address().port}`], timeoutMs: 200, tries: 1 } }));
  const v = await check.run(contextFor('a@strict.test', 'a@spf.test'), AbortSignal.timeout(5000));
  assert.match(fieldOf(v), /; spf=temperror .*; dmarc=temperror/);
});
