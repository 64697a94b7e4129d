// DNS lists against a real DNS server (dnsmasq on a loopback port) with the real resolver and an
// injected clock: answer patterns, weighted scores, allow lists, error codes, IPv6 names, the
// cache (TTL, negative answers, shared in-flight lookups), a server that never answers; then the
// verdict through the real machine and pipeline, remembered in the session and, by host only,
// in a sqlite state store across sessions.

import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { pino } from 'pino';
import { startDnsServer, type DnsTestServer } from '../../../../test/helpers/dns-server.ts';
import { policySession } from '../../../../test/helpers/drive.ts';
import { createDnsClient } from '../../../dns/resolver.ts';
import type { PolicyVerdict } from '../../../protocol/machine.ts';
import type { SessionSecurity } from '../../../protocol/session.ts';
import { openStateStore } from '../../../store/open.ts';
import type { Check, CheckContext } from '../../check.ts';
import { PolicyPipeline } from '../../pipeline.ts';
import { DNSBL_DEFAULTS, dnsblCheck, reversedName, type DnsblOptions } from './check.ts';
import { parseAnswerPattern } from './pattern.ts';
import { GREYLIST_DEFAULTS, greylistCheck } from '../greylist/check.ts';

const SEED = 20261123;
const silent = pino({ level: 'silent' });

// ---------------------------------------------------------------------------------------------
// Answer patterns and query names (no DNS).

function matches(pattern: string, address: string): boolean {
  const p = parseAnswerPattern(pattern);
  assert.ok(p.ok, `pattern ${pattern}`);
  return p.test(address);
}

test('answer patterns: a number, a range, a list, a list with ranges', () => {
  assert.ok(matches('127.0.0.2', '127.0.0.2'));
  assert.ok(!matches('127.0.0.2', '127.0.0.3'));
  assert.ok(matches('127.0.0.[2..11]', '127.0.0.2'));
  assert.ok(matches('127.0.0.[2..11]', '127.0.0.11'));
  assert.ok(!matches('127.0.0.[2..11]', '127.0.0.12'));
  assert.ok(!matches('127.0.0.[2..11]', '127.0.0.1'));
  assert.ok(matches('127.0.[0..255].[2;4;6]', '127.0.9.4'));
  assert.ok(!matches('127.0.[0..255].[2;4;6]', '127.0.9.5'));
  assert.ok(matches('127.0.0.[1;3..5]', '127.0.0.4'));
  assert.ok(!matches('127.0.0.[1;3..5]', '127.0.0.2'));
  assert.ok(matches('127.0.[2..15].[2..3]', '127.0.10.3'), 'the dnswl.org "high trust" form');
  assert.ok(!matches('127.0.0.2', 'not an address'));
  assert.ok(!matches('127.0.0.2', '::1'));
});

test('answer patterns: a bad pattern says what is wrong', () => {
  const problem = (text: string): string => {
    const p = parseAnswerPattern(text);
    assert.ok(!p.ok, `${text} should be refused`);
    return p.problem;
  };
  assert.match(problem('127.0.0.[11..2]'), /octet 4 "\[11\.\.2\]": the range \[11\.\.2\] is empty/);
  assert.match(problem('127.0.0'), /needs four octets separated by dots, found 3/);
  assert.match(problem('127.0.0.2.5'), /found 5/);
  assert.match(problem('300.0.0.1'), /octet 1 "300": 300 is above 255/);
  assert.match(problem('127.0.0.[a..b]'), /octet 4 "\[a\.\.b\]": "a" is not a number/);
  assert.match(problem('127.0.0.[2..11'), /without its "\]"/);
  assert.match(problem('127.0.0.[]'), /an empty \[\]/);
  assert.match(problem('127.0.0.[1..2..3]'), /not a number or an a\.\.b range/);
  assert.match(problem('127.0.0.-1'), /"-1" is not a number/);
  assert.match(problem(''), /found 1/);
});

test('answer patterns (property): a range matches exactly the addresses whose octet lies in it', () => {
  const octet = fc.integer({ min: 0, max: 255 });
  fc.assert(
    fc.property(octet, octet, fc.integer({ min: 0, max: 3 }), fc.tuple(octet, octet, octet, octet), (x, y, position, address) => {
      const [lo, hi] = x <= y ? [x, y] : [y, x];
      const fixed = address.map(String);
      const pattern = fixed.map((o, i) => (i === position ? `[${lo}..${hi}]` : o)).join('.');
      const p = parseAnswerPattern(pattern);
      assert.ok(p.ok);
      for (const candidate of [lo - 1, lo, hi, hi + 1, address[position]]) {
        if (candidate < 0 || candidate > 255) continue;
        const probe = address.map((o, i) => (i === position ? candidate : o)).join('.');
        assert.equal(p.test(probe), candidate >= lo && candidate <= hi, `${pattern} vs ${probe}`);
      }
      // Any other octet differing means no match.
      const other = (position + 1) % 4;
      const moved = address.map((o, i) => (i === other ? (o + 1) % 256 : i === position ? lo : o)).join('.');
      assert.equal(p.test(moved), false, `${pattern} vs ${moved}`);
    }),
    { seed: SEED, numRuns: 300 },
  );
});

test('answer patterns (property): a list of numbers matches exactly its members', () => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 6 }), fc.integer({ min: 0, max: 255 }), (members, probe) => {
      const p = parseAnswerPattern(`127.0.0.[${members.join(';')}]`);
      assert.ok(p.ok);
      assert.equal(p.test(`127.0.0.${probe}`), members.includes(probe));
    }),
    { seed: SEED, numRuns: 300 },
  );
});

test('query names: reversed octets, reversed nibbles (RFC 5782 2.1, 2.4), mapped IPv4', () => {
  assert.equal(reversedName('192.0.2.1'), '1.2.0.192');
  assert.equal(reversedName('2001:db8:1:2:3:4:567:89ab'), 'b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2');
  assert.equal(reversedName('2001:DB8::1'), '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2');
  assert.equal(reversedName('::1'), `1${'.0'.repeat(31)}`);
  assert.equal(reversedName('::ffff:192.0.2.1'), '1.2.0.192', 'a mapped IPv4 client is an IPv4 client');
  assert.equal(reversedName('64:ff9b::192.0.2.1'), '1.0.2.0.0.0.0.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.b.9.f.f.4.6.0.0');
  assert.equal(reversedName('unix-socket'), null);
  assert.equal(reversedName(''), null);
});

test('settings that are our configuration bug throw at construction', () => {
  const base = { ...DNSBL_DEFAULTS, dns: createDnsClient({ servers: ['127.0.0.1:1'], timeoutMs: 100, tries: 1 }), now: () => 0 };
  assert.throws(() => dnsblCheck({ ...base, lists: [] }), /no lists/);
  assert.throws(() => dnsblCheck({ ...base, lists: [{ zone: 'zen.test', weight: 1, answers: ['127.0.0.[9..2]'] }] }), /zen\.test: answer pattern "127\.0\.0\.\[9\.\.2\]"/);
  assert.throws(() => dnsblCheck({ ...base, lists: [{ zone: 'zen.test\r\n250 ok', weight: 1, answers: [] }] }), /not a DNS zone name/);
  assert.throws(() => dnsblCheck({ ...base, lists: [{ zone: 'zen.test', weight: 1, answers: [] }], threshold: 0 }), /threshold must be above 0/);
  assert.throws(() => dnsblCheck({ ...base, lists: [{ zone: 'zen.test', weight: 1, answers: [] }], allowThreshold: 0 }), /allow threshold must be below 0/);
});

// ---------------------------------------------------------------------------------------------
// Against dnsmasq.

const ZONES = ['block.test', 'a.test', 'b.test', 'allow.test', 'pat.test'];
/** 192.0.2.1 -> "host-record=1.2.0.192.<zone>,<answer>". */
const listed = (address: string, zone: string, answer: string): string => `host-record=${reversedName(address)}.${zone},${answer}`;
const RECORDS = [
  listed('192.0.2.1', 'block.test', '127.0.0.2'),
  listed('192.0.2.2', 'a.test', '127.0.0.2'),
  listed('192.0.2.2', 'b.test', '127.0.0.4'),
  listed('192.0.2.3', 'block.test', '127.0.0.2'),
  listed('192.0.2.3', 'allow.test', '127.0.10.2'),
  listed('192.0.2.4', 'allow.test', '127.0.10.2'),
  listed('192.0.2.12', 'pat.test', '127.0.0.12'),
  listed('192.0.2.11', 'pat.test', '127.0.0.11'),
  listed('192.0.2.254', 'block.test', '127.255.255.254'),
  listed('192.0.2.253', 'block.test', '198.51.100.1'),
  listed('2001:db8::1', 'block.test', '127.0.0.3'),
];

async function withDns(t: { after: (fn: () => Promise<void>) => void }, ttl = 60): Promise<DnsTestServer> {
  const dns = await startDnsServer({ zones: ZONES, records: RECORDS, ttl });
  t.after(() => dns.stop());
  return dns;
}

type Warned = { obj: object; msg: string }[];

function makeCheck(server: string, over: Partial<DnsblOptions> = {}, warned: Warned = []): { check: Check; clock: { ms: number } } {
  const clock = { ms: Date.UTC(2026, 10, 23, 12, 0, 0) };
  const check = dnsblCheck({
    ...DNSBL_DEFAULTS,
    lists: [{ zone: 'block.test', weight: 1, answers: [] }],
    dns: createDnsClient({ servers: [server], timeoutMs: 1000, tries: 1 }),
    lookupTimeoutMs: 2000,
    now: () => clock.ms,
    log: { warn: (obj, msg) => warned.push({ obj, msg }) },
    ...over,
  });
  return { check, clock };
}

function ctxFor(address: string, isRelayClient = false): CheckContext {
  const session: SessionSecurity = {
    id: 'S1',
    peer: { address, port: 40000 },
    local: { address: '127.0.0.1', port: 25 },
    proxy: null,
    isRelayClient,
    connectedAtMs: 0,
    helo: { verb: 'EHLO', name: 'c.example' },
    tls: null,
    auth: null,
    counters: { commands: 0, errors: 0, junk: 0, transactions: 0, messages: 0, recipients: 0 },
    verdicts: [],
  };
  return { stage: 'rcpt', session, transaction: null, recipient: null, heloName: 'c.example', message: null, nowMs: 0 };
}

async function run(check: Check, address: string, isRelayClient = false): Promise<PolicyVerdict> {
  return check.run(ctxFor(address, isRelayClient), new AbortController().signal);
}

function refusal(v: PolicyVerdict): Extract<PolicyVerdict, { reply: unknown }> {
  assert.ok(v.action === 'reject' || v.action === 'tempfail' || v.action === 'disconnect', `expected a refusal, got ${JSON.stringify(v)}`);
  return v;
}

test('dnsbl: a listed client is refused with a reply naming the list; an unlisted one is not', async (t) => {
  const dns = await withDns(t);
  const { check } = makeCheck(dns.server);
  const v = refusal(await run(check, '192.0.2.1'));
  assert.equal(v.action, 'reject');
  assert.deepEqual(v.reply, { code: 554, enhanced: '5.7.1', lines: ['Service unavailable; client [192.0.2.1] blocked using block.test'] });
  assert.equal(v.check, 'dnsbl');
  assert.equal(v.key, '');
  assert.equal(v.ttlSeconds, 60);
  assert.match(v.reason, /score 1 >= 1: block\.test=127\.0\.0\.2 \(weight 1\)/);
  assert.equal(check.memoryScope, 'host');
  assert.equal(check.key?.(ctxFor('192.0.2.1')), '');
  assert.deepEqual(await run(check, '192.0.2.99'), { action: 'continue' });
});

test('dnsbl: tempfail answers 450 4.7.1 (421 and disconnect at the connect stage)', async (t) => {
  const dns = await withDns(t);
  const v = refusal(await run(makeCheck(dns.server, { action: 'tempfail' }).check, '192.0.2.1'));
  assert.equal(v.action, 'tempfail');
  assert.equal(v.reply.code, 450);
  assert.equal(v.reply.enhanced, '4.7.1');
  const c = refusal(await run(makeCheck(dns.server, { action: 'tempfail', stage: 'connect' }).check, '192.0.2.1'));
  assert.equal(c.action, 'disconnect');
  assert.equal(c.reply.code, 421);
});

test('dnsbl: weights add up across lists; one list alone stays below the threshold', async (t) => {
  const dns = await withDns(t);
  const lists = [
    { zone: 'a.test', weight: 1, answers: [] },
    { zone: 'b.test', weight: 1, answers: [] },
    { zone: 'block.test', weight: 1, answers: [] },
  ];
  const { check } = makeCheck(dns.server, { lists, threshold: 2 });
  const v = refusal(await run(check, '192.0.2.2'));
  assert.equal(v.reply.lines[0], 'Service unavailable; client [192.0.2.2] blocked using a.test, b.test');
  assert.match(v.reason, /^score 2 >= 2/);
  assert.deepEqual(await run(check, '192.0.2.1'), { action: 'continue' }, 'block.test alone scores 1');
});

test('dnsbl: an allow list with a negative weight cancels a block list; allowThreshold accepts', async (t) => {
  const dns = await withDns(t);
  const lists = [
    { zone: 'block.test', weight: 1, answers: [] },
    { zone: 'allow.test', weight: -2, answers: ['127.0.[2..15].[2..3]'] },
  ];
  const plain = makeCheck(dns.server, { lists }).check;
  assert.deepEqual(await run(plain, '192.0.2.3'), { action: 'continue' }, 'score -1: no opinion without an allow threshold');
  const allowing = makeCheck(dns.server, { lists, allowThreshold: -1 }).check;
  assert.deepEqual(await run(allowing, '192.0.2.3'), { action: 'accept' }, 'score -1 <= -1');
  assert.deepEqual(await run(allowing, '192.0.2.4'), { action: 'accept' }, 'score -2');
  assert.deepEqual(await run(allowing, '192.0.2.99'), { action: 'continue' }, 'score 0');
  assert.equal(refusal(await run(allowing, '192.0.2.1')).reply.lines[0], 'Service unavailable; client [192.0.2.1] blocked using block.test');
});

test('dnsbl: a pattern-restricted list ignores answers outside its patterns', async (t) => {
  const dns = await withDns(t);
  const { check } = makeCheck(dns.server, { lists: [{ zone: 'pat.test', weight: 1, answers: ['127.0.0.[2..11]'] }] });
  assert.deepEqual(await run(check, '192.0.2.12'), { action: 'continue' }, '127.0.0.12 is outside [2..11]');
  assert.equal(refusal(await run(check, '192.0.2.11')).reply.lines[0], 'Service unavailable; client [192.0.2.11] blocked using pat.test');
});

test('dnsbl: a 127.255.255.x error answer is never a listing and is logged once per zone per minute', async (t) => {
  const dns = await withDns(t);
  const warned: Warned = [];
  const { check, clock } = makeCheck(dns.server, { maxCacheEntries: 0 }, warned);
  assert.deepEqual(await run(check, '192.0.2.254'), { action: 'continue' });
  assert.deepEqual(await run(check, '192.0.2.254'), { action: 'continue' });
  assert.equal(dns.queryCount(), 2, 'nothing cached: both runs asked');
  assert.equal(warned.length, 1, 'one warning for two error answers');
  assert.match(warned[0].msg, /error code/);
  assert.deepEqual(warned[0].obj, { check: 'dnsbl', zone: 'block.test', answer: '127.255.255.254' });
  clock.ms += 61_000;
  await run(check, '192.0.2.254');
  assert.equal(warned.length, 2, 'a minute later it is logged again');
  // Even a pattern that covers it does not count it.
  const wide = makeCheck(dns.server, { lists: [{ zone: 'block.test', weight: 1, answers: ['127.[0..255].[0..255].[0..255]'] }] }).check;
  assert.deepEqual(await run(wide, '192.0.2.254'), { action: 'continue' });
});

test('dnsbl: by default an answer outside 127.0.0.0/8 is not a listing', async (t) => {
  const dns = await withDns(t);
  assert.deepEqual(await run(makeCheck(dns.server).check, '192.0.2.253'), { action: 'continue' });
});

test('dnsbl: an IPv6 client is looked up by its reversed nibbles', async (t) => {
  const dns = await withDns(t);
  const v = refusal(await run(makeCheck(dns.server).check, '2001:db8::1'));
  assert.equal(v.reply.lines[0], 'Service unavailable; client [2001:db8::1] blocked using block.test');
  assert.deepEqual(await run(makeCheck(dns.server).check, '2001:db8::2'), { action: 'continue' });
});

test('dnsbl: answers are cached for their TTL, and a cached listing is valid for what is left of it', async (t) => {
  const dns = await withDns(t, 60);
  const { check, clock } = makeCheck(dns.server);
  assert.equal(refusal(await run(check, '192.0.2.1')).ttlSeconds, 60);
  clock.ms += 30_000;
  assert.equal(refusal(await run(check, '192.0.2.1')).ttlSeconds, 30, 'from the cache: the remaining TTL');
  assert.equal(dns.queryCount(), 1, 'the second check made no query');
  clock.ms += 30_001;
  assert.equal(refusal(await run(check, '192.0.2.1')).ttlSeconds, 60);
  assert.equal(dns.queryCount(), 2, 'past the TTL it asked again');
});

test('dnsbl: "not listed" is cached for negativeCacheSeconds', async (t) => {
  const dns = await withDns(t);
  const { check, clock } = makeCheck(dns.server, { negativeCacheSeconds: 60 });
  await run(check, '192.0.2.99');
  clock.ms += 59_000;
  await run(check, '192.0.2.99');
  assert.equal(dns.queryCount(), 1);
  clock.ms += 2000;
  await run(check, '192.0.2.99');
  assert.equal(dns.queryCount(), 2);
});

test('dnsbl: two sessions from one client at once share one lookup per list', async (t) => {
  const dns = await withDns(t);
  const lists = [
    { zone: 'a.test', weight: 1, answers: [] },
    { zone: 'b.test', weight: 1, answers: [] },
  ];
  const { check } = makeCheck(dns.server, { lists, threshold: 2, maxCacheEntries: 0 });
  const [one, two] = await Promise.all([run(check, '192.0.2.2'), run(check, '192.0.2.2')]);
  assert.equal(refusal(one).reply.code, 554);
  assert.equal(refusal(two).reply.code, 554);
  assert.equal(dns.queryCount(), 2, 'one query per list, not per session');
});

test('dnsbl: the cache is bounded: the oldest entry goes first', async (t) => {
  const dns = await withDns(t);
  const { check } = makeCheck(dns.server, { maxCacheEntries: 2 });
  for (const a of ['192.0.2.97', '192.0.2.98', '192.0.2.99']) await run(check, a);
  assert.equal(dns.queryCount(), 3);
  await run(check, '192.0.2.99');
  await run(check, '192.0.2.98');
  assert.equal(dns.queryCount(), 3, 'the two newest are cached');
  await run(check, '192.0.2.97');
  assert.equal(dns.queryCount(), 4, 'the oldest was evicted');
});

test('dnsbl: a relay client and a non-IP peer are not looked up', async (t) => {
  const dns = await withDns(t);
  const { check } = makeCheck(dns.server);
  assert.deepEqual(await run(check, '192.0.2.1', true), { action: 'continue' });
  assert.deepEqual(await run(check, 'unknown'), { action: 'continue' });
  assert.equal(dns.queryCount(), 0);
});

/** A loopback UDP port that receives queries and never answers. */
async function silentDnsServer(t: { after: (fn: () => Promise<void>) => void }): Promise<{ server: string; received: () => number }> {
  const socket = createSocket('udp4');
  let received = 0;
  socket.on('message', () => received++);
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => socket.close(() => resolve())));
  return { server: `127.0.0.1:${socket.address().port}`, received: () => received };
}

test('dnsbl: a DNS server that never answers costs the lookup budget, then counts as not listed', async (t) => {
  const silent = await silentDnsServer(t);
  const warned: Warned = [];
  const clock = { ms: 0 };
  // The resolver would wait 1.5 s; the check's budget is 300 ms.
  const check = dnsblCheck({
    ...DNSBL_DEFAULTS,
    lists: [{ zone: 'block.test', weight: 1, answers: [] }, { zone: 'a.test', weight: 1, answers: [] }],
    dns: createDnsClient({ servers: [silent.server], timeoutMs: 1500, tries: 1 }),
    lookupTimeoutMs: 300,
    now: () => clock.ms,
    log: { warn: (obj, msg) => warned.push({ obj, msg }) },
  });
  assert.ok((check.timeoutMs ?? 0) > 300, 'the pipeline budget is a bit above the lookups');
  assert.deepEqual(check.onTimeout, { action: 'continue' });
  const started = performance.now();
  assert.deepEqual(await run(check, '192.0.2.1'), { action: 'continue' });
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 250 && elapsed < 1000, `took ${Math.round(elapsed)} ms`);
  assert.equal(warned.length, 2, 'one warning per list');
  assert.match(warned[0].msg, /lookup failed/);
  assert.match(JSON.stringify(warned[0].obj), /no answer within 300 ms/);
});

test('dnsbl: a failed lookup is not cached: the next client asks again', async (t) => {
  const silent = await silentDnsServer(t);
  const check = dnsblCheck({
    ...DNSBL_DEFAULTS,
    lists: [{ zone: 'block.test', weight: 1, answers: [] }],
    dns: createDnsClient({ servers: [silent.server], timeoutMs: 150, tries: 1 }),
    lookupTimeoutMs: 1000,
    now: () => 0,
  });
  assert.deepEqual(await run(check, '192.0.2.1'), { action: 'continue' }, 'the resolver gave up (ETIMEOUT) within the budget');
  assert.equal(silent.received(), 1);
  assert.deepEqual(await run(check, '192.0.2.1'), { action: 'continue' });
  assert.equal(silent.received(), 2);
});

test('dnsbl: the pipeline signal ends the wait', async (t) => {
  const silent = await silentDnsServer(t);
  const check = dnsblCheck({
    ...DNSBL_DEFAULTS,
    lists: [{ zone: 'block.test', weight: 1, answers: [] }],
    dns: createDnsClient({ servers: [silent.server], timeoutMs: 1000, tries: 1 }),
    lookupTimeoutMs: 5000,
    now: () => 0,
  });
  const started = performance.now();
  assert.deepEqual(await check.run(ctxFor('192.0.2.1'), AbortSignal.timeout(100)), { action: 'continue' });
  assert.ok(performance.now() - started < 800);
});

// ---------------------------------------------------------------------------------------------
// Through the session machine and the pipeline.

const TX = 'MAIL FROM:<a@sender.example>\r\nRCPT TO:<alice@example.test>\r\n';

test('dnsbl in the pipeline: refused at RCPT with the list named; RSET and a new MAIL get the remembered refusal', async (t) => {
  const dns = await withDns(t);
  // No cache: only verdict memory can spare the second lookup.
  const { check } = makeCheck(dns.server, { maxCacheEntries: 0 });
  const pipeline = new PolicyPipeline([check], { log: silent, defaultTimeoutMs: 1000 });
  const r = await policySession(pipeline, `HELO c.example\r\n${TX}RCPT TO:<bob@example.test>\r\nRSET\r\nMAIL FROM:<other@else.example>\r\nRCPT TO:<carol@example.test>\r\n`, {
    address: '192.0.2.1',
    maxRefusals: 10,
  });
  const blocked = '554 5.7.1 Service unavailable; client [192.0.2.1] blocked using block.test';
  assert.deepEqual(r.slice(2), ['250 2.1.0 Sender ok', blocked, blocked, '250 2.0.0 Reset', '250 2.1.0 Sender ok', blocked]);
  assert.equal(dns.queryCount(), 1, 'one lookup for the whole session');
});

test('dnsbl in the pipeline at connect: the greeting is the refusal', async (t) => {
  const dns = await withDns(t);
  const { check } = makeCheck(dns.server, { stage: 'connect' });
  const pipeline = new PolicyPipeline([check], { log: silent, defaultTimeoutMs: 1000 });
  const r = await policySession(pipeline, 'HELO c.example\r\n', { address: '192.0.2.1' });
  assert.equal(r[0], '554 5.7.1 Service unavailable; client [192.0.2.1] blocked using block.test');
  assert.equal(r[1].slice(0, 3), '503');
  assert.equal((await policySession(pipeline, 'HELO c.example\r\n', { address: '192.0.2.99' }))[0].slice(0, 3), '220');
});

test('dnsbl in the pipeline with a sqlite store: a reconnect is refused from the store, a neighbour is checked afresh', async (t) => {
  const dns = await withDns(t);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-dnsbl-'));
  const { check, clock } = makeCheck(dns.server, { maxCacheEntries: 0 });
  const store = await openStateStore('sqlite', { dir, now: () => clock.ms });
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const pipeline = new PolicyPipeline([check], { log: silent, defaultTimeoutMs: 1000, store, now: () => clock.ms });
  const session = async (address: string): Promise<string | undefined> =>
    (await policySession(pipeline, `HELO c.example\r\n${TX}`, { address, nowMs: () => clock.ms })).at(-1);
  const blocked = '554 5.7.1 Service unavailable; client [192.0.2.1] blocked using block.test';
  assert.equal(await session('192.0.2.1'), blocked);
  assert.equal(dns.queryCount(), 1);
  assert.equal(await session('192.0.2.1'), blocked, 'reconnect: remembered');
  assert.equal(dns.queryCount(), 1, 'from the store, not DNS');
  assert.equal(await session('192.0.2.7'), '250 2.1.5 Recipient ok', 'same /24, not listed: memoryScope host');
  assert.equal(dns.queryCount(), 2);
  clock.ms += 61_000;
  assert.equal(await session('192.0.2.1'), blocked, 'after the TTL: looked up again');
  assert.equal(dns.queryCount(), 3);
});

test('dnsbl in the pipeline: an allow-listed client skips the greylisting after it', async (t) => {
  const dns = await withDns(t);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-dnsbl-'));
  const clock = { ms: Date.UTC(2026, 10, 23, 12, 0, 0) };
  const store = await openStateStore('sqlite', { dir, now: () => clock.ms });
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const { check } = makeCheck(dns.server, {
    lists: [{ zone: 'block.test', weight: 1, answers: [] }, { zone: 'allow.test', weight: -2, answers: [] }],
    allowThreshold: -1,
  });
  const greylist = greylistCheck({ store, stage: 'rcpt', ...GREYLIST_DEFAULTS, now: () => clock.ms });
  const pipeline = new PolicyPipeline([check, greylist], { log: silent, defaultTimeoutMs: 1000, store, now: () => clock.ms });
  const last = async (address: string): Promise<string | undefined> =>
    (await policySession(pipeline, `HELO c.example\r\n${TX}`, { address, nowMs: () => clock.ms })).at(-1);
  assert.equal(await last('192.0.2.4'), '250 2.1.5 Recipient ok', 'allow-listed: accepted, not greylisted');
  assert.equal(await last('192.0.2.99'), '451 4.7.1 Greylisted, please try again later', 'unlisted: greylisted');
});
