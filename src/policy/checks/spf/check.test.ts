// The SPF check against a real DNS server (dnsmasq on loopback, no mocked resolver): every
// result, the null sender's HELO identity, the RFC 7208 4.6.4 lookup limits as mailauth enforces
// them, a dead server (temperror, bounded in time), configurable actions, relay clients, both
// header formats as valid header fields, and verdict memory through the real machine and pipeline.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { startDnsServer, type DnsTestServer } from '../../../../test/helpers/dns-server.ts';
import { policySession } from '../../../../test/helpers/drive.ts';
import { createDnsClient, type DnsClient } from '../../../dns/resolver.ts';
import { parseMailbox } from '../../../protocol/address.ts';
import type { PolicyVerdict } from '../../../protocol/machine.ts';
import { formatReply } from '../../../protocol/replies.ts';
import { newSessionSecurity, type Transaction } from '../../../protocol/session.ts';
import type { CheckContext } from '../../check.ts';
import { PolicyPipeline } from '../../pipeline.ts';
import { foldField } from '../../../message/header-field.ts';
import { SPF_DEFAULT_ACTIONS, SPF_DEFAULTS, spfCheck, type SpfOptions } from './check.ts';

const HOST = 'mx.portcullis.test';
const IP = '192.0.2.25';
const OTHER_IP = '198.51.100.7';

let dns: DnsTestServer;
let client: DnsClient;

/** Ten DNS mechanisms (4 include, 3 a, 3 mx), none matching 192.0.2.25, then -all. */
const TEN = [
  ...[1, 2, 3, 4].map((i) => `include:inc${i}.spf.test`),
  ...[1, 2, 3].map((i) => `a:h${i}.spf.test`),
  ...[1, 2, 3].map((i) => `mx:m${i}.spf.test`),
];

before(async () => {
  dns = await startDnsServer({
    zones: ['spf.test', 'helo.test'],
    records: [
      `txt-record=ip4.spf.test,"v=spf1 ip4:192.0.2.0/24 -all"`,
      `txt-record=a.spf.test,"v=spf1 a -all"`,
      `host-record=a.spf.test,${IP}`,
      `txt-record=mx.spf.test,"v=spf1 mx -all"`,
      'mx-host=mx.spf.test,mail.spf.test,10',
      `host-record=mail.spf.test,${IP}`,
      `txt-record=include.spf.test,"v=spf1 include:inc.spf.test -all"`,
      `txt-record=inc.spf.test,"v=spf1 ip4:${IP} -all"`,
      `txt-record=fail.spf.test,"v=spf1 ip4:203.0.113.1 -all"`,
      `txt-record=softfail.spf.test,"v=spf1 ip4:203.0.113.1 ~all"`,
      `txt-record=neutral.spf.test,"v=spf1 ?all"`,
      // A name with an address but no TXT record (no-data), and one with nothing (NXDOMAIN).
      `host-record=nospf.spf.test,${IP}`,
      `txt-record=syntax.spf.test,"v=spf1 ip4:not-an-address -all"`,
      `txt-record=unknown.spf.test,"v=spf1 frobnicate:x.spf.test -all"`,
      // The lookup limit: 10 mechanisms are fine (the result is -all), 11 are a permerror.
      `txt-record=lookups10.spf.test,"v=spf1 ${TEN.join(' ')} -all"`,
      `txt-record=lookups11.spf.test,"v=spf1 ${TEN.join(' ')} a:h4.spf.test -all"`,
      ...[1, 2, 3, 4].map((i) => `txt-record=inc${i}.spf.test,"v=spf1 -all"`),
      ...[1, 2, 3, 4].map((i) => `host-record=h${i}.spf.test,203.0.113.${i}`),
      ...[1, 2, 3].map((i) => `mx-host=m${i}.spf.test,h1.spf.test,10`),
      // The void-lookup limit: 2 names that do not exist are fine, 3 are a permerror.
      `txt-record=void2.spf.test,"v=spf1 a:nx1.spf.test a:nx2.spf.test -all"`,
      `txt-record=void3.spf.test,"v=spf1 a:nx1.spf.test a:nx2.spf.test a:nx3.spf.test -all"`,
      // An internationalized sender domain is looked up by its A-labels.
      `txt-record=xn--bcher-kva.spf.test,"v=spf1 ip4:203.0.113.1 -all"`,
      // HELO identities (RFC 7208 2.3, 2.4).
      `txt-record=mta.helo.test,"v=spf1 ip4:${IP} -all"`,
    ],
  });
  client = createDnsClient({ servers: [dns.server], timeoutMs: 2000, tries: 1 });
});
after(async () => {
  await dns.stop();
});

function options(over: Partial<SpfOptions> = {}): SpfOptions {
  return { dns: client, hostname: HOST, ...SPF_DEFAULTS, ...over };
}

type Ctx = { from: string | null; helo?: string | null; ip?: string; isRelayClient?: boolean };

function contextFor(c: Ctx): CheckContext {
  const session = newSessionSecurity({ id: 'S', peer: { address: c.ip ?? IP, port: 1 }, local: { address: '127.0.0.1', port: 25 }, isRelayClient: c.isRelayClient ?? false, nowMs: 0 });
  const helo = c.helo === undefined ? 'client.example' : c.helo;
  session.helo = helo === null ? null : { verb: 'EHLO', name: helo };
  const reversePath = c.from === null ? null : parseMailbox(c.from, true);
  if (c.from !== null) assert.ok(reversePath, `test address ${c.from}`);
  const transaction: Transaction = { kind: 'open', seq: 1, reversePath, body: '7BIT', smtputf8: false, declaredSize: null, recipients: [], usedBdat: false, addedHeaders: [], reader: { kind: 'command' }, content: null, spilled: null, headerProbeBytes: 0, reservedBytes: 0 };
  return { stage: 'mail', session, transaction, recipient: null, heloName: helo, message: null, nowMs: 0 };
}

async function run(c: Ctx, over: Partial<SpfOptions> = {}): Promise<PolicyVerdict> {
  const check = spfCheck(options(over));
  return check.run(contextFor(c), AbortSignal.timeout(check.timeoutMs ?? 10_000));
}

function replyOf(v: PolicyVerdict): string {
  assert.ok(v.action === 'reject' || v.action === 'tempfail' || v.action === 'disconnect', `a refusal, got ${JSON.stringify(v)}`);
  return formatReply(v.reply).trimEnd();
}

/** The one added header of a continue verdict, unfolded for matching. */
function headerOf(v: PolicyVerdict): string {
  assert.equal(v.action, 'continue', `continue, got ${JSON.stringify(v)}`);
  assert.ok(v.action === 'continue' && v.headers !== undefined && v.headers.length === 1, 'one header');
  assertValidField(v.headers[0]);
  return v.headers[0].replace(/\r\n(?=[ \t])/g, '');
}

/** RFC 5322 2.2 / 2.2.3: a name, a colon, lines joined only by CRLF + WSP, no final CRLF. */
function assertValidField(field: string): void {
  assert.match(field, /^[\x21-\x39\x3b-\x7e]+: \S/, 'field name, colon, value');
  assert.ok(!field.endsWith('\r\n'), 'no trailing CRLF (the machine adds it)');
  const lines = field.split('\r\n');
  for (const [i, line] of lines.entries()) {
    assert.ok(!/[\r\n\x00]/.test(line), `no bare CR, LF or NUL in line ${i}: ${JSON.stringify(line)}`);
    assert.ok(/^[\x09\x20-\x7e]*$/.test(line), `printable ASCII only in line ${i}: ${JSON.stringify(line)}`);
    assert.ok(Buffer.byteLength(line) <= 998, 'at most 998 octets per line');
    if (i > 0) assert.match(line, /^[ \t]+\S/, `continuation line ${i} starts with whitespace and is not blank`);
  }
}

test('spf: pass through ip4, a, mx and include adds a Received-SPF field; the key is the domain', async () => {
  for (const domain of ['ip4', 'a', 'mx', 'include']) {
    const h = headerOf(await run({ from: `user@${domain}.spf.test` }));
    assert.equal(
      h,
      `Received-SPF: pass (${HOST}: domain of user@${domain}.spf.test designates ${IP} as permitted sender) client-ip=${IP};` +
        ` envelope-from="user@${domain}.spf.test"; helo=client.example; receiver=${HOST}; identity=mailfrom;`,
    );
  }
  const check = spfCheck(options());
  assert.equal(check.name, 'spf');
  assert.deepEqual(check.stages, ['mail']);
  assert.equal(check.key?.(contextFor({ from: 'User@IP4.Spf.Test' })), 'ip4.spf.test');
  assert.equal(check.key?.(contextFor({ from: null, helo: 'MTA.helo.test' })), 'mta.helo.test');
});

test('spf: fail is refused 550 5.7.23 naming the domain and client, with no TTL', async () => {
  const v = await run({ from: 'user@fail.spf.test' });
  assert.equal(replyOf(v), `550 5.7.23 SPF validation failed: fail.spf.test does not designate ${IP} as permitted sender`);
  assert.ok(v.action === 'reject' && v.ttlSeconds === undefined && v.check === 'spf');
  assert.ok(v.action === 'reject' && v.reason.includes('spf fail for mailfrom fail.spf.test'), v.action === 'reject' ? v.reason : '');
});

test('spf: an internationalized domain is checked by its A-labels; the reply stays ASCII', async () => {
  const check = spfCheck(options());
  const ctx = contextFor({ from: 'user@Bücher.spf.test' });
  assert.equal(check.key?.(ctx), 'xn--bcher-kva.spf.test');
  const v = await check.run(ctx, AbortSignal.timeout(5000));
  assert.equal(replyOf(v), `550 5.7.23 SPF validation failed: xn--bcher-kva.spf.test does not designate ${IP} as permitted sender`);
});

test('spf: softfail and neutral continue with a header saying so; none when there is no record', async () => {
  assert.match(headerOf(await run({ from: 'user@softfail.spf.test' })), /^Received-SPF: softfail \(.*transitioning.*\) client-ip=192\.0\.2\.25;/);
  assert.match(headerOf(await run({ from: 'user@neutral.spf.test' })), /^Received-SPF: neutral /);
  assert.match(headerOf(await run({ from: 'user@nospf.spf.test' })), /^Received-SPF: none \(.*nospf\.spf\.test does not designate permitted sender hosts\)/);
  assert.match(headerOf(await run({ from: 'user@nxdomain.spf.test' })), /^Received-SPF: none /);
});

test('spf: the null sender is checked as postmaster@<HELO name> (RFC 7208 2.4): pass and fail', async () => {
  const pass = headerOf(await run({ from: null, helo: 'mta.helo.test' }));
  assert.equal(
    pass,
    `Received-SPF: pass (${HOST}: domain of postmaster@mta.helo.test designates ${IP} as permitted sender) client-ip=${IP};` +
      ` envelope-from="postmaster@mta.helo.test"; helo=mta.helo.test; receiver=${HOST}; identity=helo;`,
  );
  assert.match(headerOf(await run({ from: null, helo: 'MTA.Helo.Test' })), /^Received-SPF: pass .*envelope-from="postmaster@mta\.helo\.test"; helo=MTA\.Helo\.Test;/);
  const fail = await run({ from: null, helo: 'mta.helo.test', ip: OTHER_IP });
  assert.equal(replyOf(fail), `550 5.7.23 SPF validation failed: mta.helo.test does not designate ${OTHER_IP} as permitted sender`);
  const ar = headerOf(await run({ from: null, helo: 'mta.helo.test' }, { header: 'authentication-results' }));
  assert.equal(ar, `Authentication-Results: ${HOST}; spf=pass smtp.helo=mta.helo.test`);
});

test('spf: a null sender with an address-literal or missing HELO name is none, without DNS', async () => {
  const before = dns.queryCount();
  assert.match(headerOf(await run({ from: null, helo: '[192.0.2.25]' })), /^Received-SPF: none .* identity=helo;$/);
  assert.match(headerOf(await run({ from: null, helo: null })), /^Received-SPF: none /);
  assert.match(headerOf(await run({ from: 'user@[192.0.2.1]' })), /^Received-SPF: none /);
  await sleep(50);
  assert.equal(dns.queryCount(), before);
  // ... and "none" follows its configured action like any result.
  assert.equal(replyOf(await run({ from: null, helo: '[192.0.2.25]' }, { actions: { ...SPF_DEFAULT_ACTIONS, none: 'tempfail' } })), '451 4.7.24 SPF validation error, try again later');
});

test('spf: permerror for a syntax error (continue by default, 550 5.7.24 when configured to reject)', async () => {
  for (const domain of ['syntax', 'unknown']) {
    assert.match(headerOf(await run({ from: `user@${domain}.spf.test` })), /^Received-SPF: permerror /);
  }
  const reject = { actions: { ...SPF_DEFAULT_ACTIONS, permerror: 'reject' as const } };
  assert.equal(replyOf(await run({ from: 'user@syntax.spf.test' }, reject)), '550 5.7.24 SPF validation error: the SPF record of syntax.spf.test is invalid');
});

test('spf: mailauth enforces 10 DNS mechanisms (RFC 7208 4.6.4): 10 evaluate, 11 are a permerror', async () => {
  const queriesOf = async (from: string): Promise<{ v: PolicyVerdict; queries: number }> => {
    await sleep(50);
    const before = dns.queryCount();
    const v = await run({ from });
    await sleep(100);
    return { v, queries: dns.queryCount() - before };
  };
  const ten = await queriesOf('user@lookups10.spf.test');
  assert.equal(replyOf(ten.v), `550 5.7.23 SPF validation failed: lookups10.spf.test does not designate ${IP} as permitted sender`);
  const eleven = await queriesOf('user@lookups11.spf.test');
  assert.match(headerOf(eleven.v), /^Received-SPF: permerror \(.*Too many DNS requests\)/);
  // 1 TXT + 4 include TXT + 3 a (A and AAAA each) + 3 mx (MX, then A and AAAA of its host) = 20;
  // the 11th mechanism is refused before its query is sent.
  assert.equal(ten.queries, 20);
  assert.equal(eleven.queries, ten.queries);
});

test('spf: mailauth enforces 2 void lookups (RFC 7208 4.6.4): 2 evaluate, 3 are a permerror', async () => {
  assert.equal(replyOf(await run({ from: 'user@void2.spf.test' })), `550 5.7.23 SPF validation failed: void2.spf.test does not designate ${IP} as permitted sender`);
  assert.match(headerOf(await run({ from: 'user@void3.spf.test' })), /^Received-SPF: permerror \(.*Too many void DNS results\)/);
});

/** A DNS server that never answers: a UDP socket on loopback that reads and drops. */
async function deadDnsServer(): Promise<{ server: string; close: () => Promise<void> }> {
  const sock = dgram.createSocket('udp4');
  sock.on('message', () => {});
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
  return { server: `127.0.0.1:${sock.address().port}`, close: () => new Promise((resolve) => sock.close(() => resolve())) };
}

test('spf: a DNS server that never answers is a temperror: 451 4.7.24, in bounded time', async (t) => {
  const dead = await deadDnsServer();
  t.after(dead.close);
  const slowDns = createDnsClient({ servers: [dead.server], timeoutMs: 200, tries: 1 });
  const started = Date.now();
  const v = await run({ from: 'user@ip4.spf.test' }, { dns: slowDns });
  assert.equal(replyOf(v), '451 4.7.24 SPF validation error, try again later');
  assert.ok(v.action === 'tempfail' && /spf temperror/.test(v.reason), v.action === 'tempfail' ? v.reason : '');
  // Bounded by the DNS timeout (200 ms x 2 tries), with room for a loaded machine; unbounded would be 120 s.
  assert.ok(Date.now() - started < 5000, 'bounded by the DNS timeout');
  // temperror configured to continue: accepted with a header saying temperror.
  assert.match(headerOf(await run({ from: 'user@ip4.spf.test' }, { dns: slowDns, actions: { ...SPF_DEFAULT_ACTIONS, temperror: 'continue' } })), /^Received-SPF: temperror /);
});

test('spf: the check budget ends a slow evaluation: its signal stops mailauth, the pipeline answers onTimeout', async (t) => {
  const dead = await deadDnsServer();
  t.after(dead.close);
  // Each DNS try waits 2.5 s (the abandoned query lingers that long in the resolver); the
  // check's budget is 300 ms.
  const slowDns = createDnsClient({ servers: [dead.server], timeoutMs: 2500, tries: 1 });
  const check = spfCheck(options({ dns: slowDns, timeoutMs: 300 }));
  assert.equal(check.timeoutMs, 300);
  assert.ok(check.onTimeout !== undefined);
  assert.equal(replyOf(check.onTimeout), '451 4.7.24 SPF validation error, try again later');
  // Directly: the abandoned evaluation itself ends when the signal fires, not when DNS gives up.
  const started = Date.now();
  const v = await check.run(contextFor({ from: 'user@ip4.spf.test' }), AbortSignal.timeout(300));
  assert.equal(replyOf(v), '451 4.7.24 SPF validation error, try again later');
  assert.ok(Date.now() - started < 1500, `ended after ${Date.now() - started} ms`);
  // Through the machine and pipeline.
  const pipeline = new PolicyPipeline([check], { log: pino({ level: 'silent' }), defaultTimeoutMs: 10_000 });
  const r = await policySession(pipeline, 'EHLO client.example\r\nMAIL FROM:<user@ip4.spf.test>\r\n', { address: IP });
  assert.equal(r.at(-1), '451 4.7.24 SPF validation error, try again later');
  // temperror configured to continue: so is the timeout.
  assert.deepEqual(spfCheck(options({ actions: { ...SPF_DEFAULT_ACTIONS, temperror: 'continue' } })).onTimeout, { action: 'continue' });
});

test('spf: actions are configurable (softfail -> reject / tempfail, fail -> continue)', async () => {
  const strict = { actions: { ...SPF_DEFAULT_ACTIONS, softfail: 'reject' as const, neutral: 'reject' as const } };
  assert.equal(replyOf(await run({ from: 'user@softfail.spf.test' }, strict)), `550 5.7.23 SPF validation failed: softfail.spf.test does not designate ${IP} as permitted sender`);
  assert.equal(replyOf(await run({ from: 'user@neutral.spf.test' }, strict)), `550 5.7.23 SPF validation failed: result neutral for neutral.spf.test and ${IP} is not accepted here`);
  const defer = { actions: { ...SPF_DEFAULT_ACTIONS, softfail: 'tempfail' as const } };
  assert.equal(replyOf(await run({ from: 'user@softfail.spf.test' }, defer)), '451 4.7.24 SPF validation gave softfail for softfail.spf.test, try again later');
  const lax = { actions: { ...SPF_DEFAULT_ACTIONS, fail: 'continue' as const } };
  assert.match(headerOf(await run({ from: 'user@fail.spf.test' }, lax)), /^Received-SPF: fail \(.*does not designate/);
});

test('spf: relay clients are not checked (their mail is outbound): continue, no header, no DNS', async () => {
  const before = dns.queryCount();
  assert.deepEqual(await run({ from: 'user@fail.spf.test', isRelayClient: true }), { action: 'continue' });
  await sleep(50);
  assert.equal(dns.queryCount(), before);
});

test('spf: header formats: authentication-results (RFC 8601) and none', async () => {
  const ar = { header: 'authentication-results' as const };
  assert.equal(headerOf(await run({ from: 'user@ip4.spf.test' }, ar)), `Authentication-Results: ${HOST}; spf=pass smtp.mailfrom=ip4.spf.test`);
  assert.equal(headerOf(await run({ from: 'user@softfail.spf.test' }, ar)), `Authentication-Results: ${HOST}; spf=softfail smtp.mailfrom=softfail.spf.test`);
  assert.deepEqual(await run({ from: 'user@ip4.spf.test' }, { header: 'none' }), { action: 'continue' });
});

test('spf: added fields are valid header fields: folded with CRLF + space, no bare CR/LF, no final CRLF', async () => {
  // A long local part and a permerror comment quoting DNS data make mailauth's comment long.
  const long = `${'x'.repeat(60)}@syntax.spf.test`;
  const v = await run({ from: long });
  assert.ok(v.action === 'continue' && v.headers !== undefined);
  assert.ok(v.headers[0].includes('\r\n '), 'long fields are folded');
  assertValidField(v.headers[0]);
  for (const from of ['user@lookups11.spf.test', 'user@void3.spf.test', 'user@nospf.spf.test']) {
    for (const header of ['received-spf', 'authentication-results'] as const) {
      const h = await run({ from }, { header });
      assert.ok(h.action === 'continue' && h.headers?.length === 1);
      assertValidField(h.headers[0]);
    }
  }
  // Whatever the input: embedded CR, LF, CRLF without whitespace, trailing CRLF.
  for (const raw of ['X-Test: a\r\nb', 'X-Test: a\rb\nc', 'X-Test: a\r\n\r\n b\r\n', `X-Test: ${'y'.repeat(2000)} z`, `X-Test: ${'w '.repeat(600)}`]) {
    assertValidField(foldField(raw));
  }
});

test('spf: verdict memory: after RSET a MAIL from the same domain gets the remembered refusal without DNS; another domain is checked', async () => {
  // No result cache: only verdict memory may spare the second lookup here.
  const pipeline = new PolicyPipeline([spfCheck(options({ cacheSeconds: 0 }))], { log: pino({ level: 'silent' }), defaultTimeoutMs: 10_000 });
  const session = async (input: string): Promise<{ replies: string[]; queries: number }> => {
    await sleep(50);
    const before = dns.queryCount();
    const replies = (await policySession(pipeline, `EHLO client.example\r\n${input}`, { address: IP, maxRefusals: 10 })).slice(2);
    await sleep(100);
    return { replies, queries: dns.queryCount() - before };
  };
  const refused = `550 5.7.23 SPF validation failed: fail.spf.test does not designate ${IP} as permitted sender`;
  const one = await session('MAIL FROM:<a@fail.spf.test>\r\n');
  assert.deepEqual(one.replies, [refused]);
  assert.ok(one.queries >= 1);
  const again = await session('MAIL FROM:<a@fail.spf.test>\r\nRSET\r\nMAIL FROM:<b@FAIL.spf.test>\r\n');
  assert.deepEqual(again.replies, [refused, '250 2.0.0 Reset', refused]);
  assert.equal(again.queries, one.queries, 'the second MAIL asked no DNS');
  const other = await session('MAIL FROM:<a@fail.spf.test>\r\nRSET\r\nMAIL FROM:<c@ip4.spf.test>\r\n');
  assert.deepEqual(other.replies, [refused, '250 2.0.0 Reset', '250 2.1.0 Sender ok']);
  assert.ok(other.queries > one.queries, 'the other domain was checked');
});

test('spf: a result is reused for the same address, sender and HELO name until cacheSeconds pass; temperror never', async () => {
  const clock = { ms: 0 };
  const check = spfCheck(options({ cacheSeconds: 60, now: () => clock.ms }));
  const queriesFor = async (c: Ctx): Promise<number> => {
    await sleep(50);
    const before = dns.queryCount();
    await check.run(contextFor(c), AbortSignal.timeout(5000));
    await sleep(100);
    return dns.queryCount() - before;
  };
  assert.ok((await queriesFor({ from: 'user@include.spf.test' })) >= 2, 'first evaluation asks DNS');
  assert.equal(await queriesFor({ from: 'user@include.spf.test' }), 0, 'the same triple is reused');
  assert.ok((await queriesFor({ from: 'other@include.spf.test' })) >= 2, 'another local part is evaluated (macros may use it)');
  assert.ok((await queriesFor({ from: 'user@include.spf.test', ip: OTHER_IP })) >= 2, 'another client address is evaluated');
  clock.ms += 61_000;
  assert.ok((await queriesFor({ from: 'user@include.spf.test' })) >= 2, 'after cacheSeconds it is evaluated again');
  const dead = await deadDnsServer();
  try {
    const slow = spfCheck(options({ dns: createDnsClient({ servers: [dead.server], timeoutMs: 100, tries: 1 }), now: () => clock.ms }));
    const ctx = contextFor({ from: 'user@ip4.spf.test' });
    assert.equal((await slow.run(ctx, AbortSignal.timeout(5000))).action, 'tempfail');
    const started = Date.now();
    assert.equal((await slow.run(ctx, AbortSignal.timeout(5000))).action, 'tempfail');
    assert.ok(Date.now() - started >= 90, 'the temperror was not reused: DNS was asked again');
  } finally {
    await dead.close();
  }
});

test('spf: a non-ASCII HELO name or sender never reaches the added field raw', async () => {
  for (const header of ['received-spf', 'authentication-results'] as const) {
    const v = await run({ from: null, helo: 'j\u00f6rg\u0085\u200b\ufffd.example' }, { header });
    assert.equal(v.action, 'continue');
    assertValidField(headerOf(v));
  }
  const v = await run({ from: 'user@ip4.spf.test', helo: 'h\u00e9lo\u202e.example' });
  assertValidField(headerOf(v));
  assert.match(headerOf(v), /helo="?h\?lo\?\.example"?;/);
});
