// HELO/EHLO name checks against a real DNS server (dnsmasq on loopback) and the real session
// machine: each option alone, all off by default, and the verdict kept for the name.

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { createDnsClient, type DnsClient } from '../../../dns/resolver.ts';
import { startDnsServer, type DnsTestServer } from '../../../../test/helpers/dns-server.ts';
import { policySession } from '../../../../test/helpers/drive.ts';
import { newSessionSecurity } from '../../../protocol/session.ts';
import { PolicyPipeline } from '../../pipeline.ts';
import { isFqdn } from '../../../net/domain.ts';
import { heloCheck, type HeloOptions } from './check.ts';

const log = pino({ level: 'silent' });
let dns: DnsTestServer;
let client: DnsClient;

before(async () => {
  dns = await startDnsServer({
    zones: ['example.test'],
    records: ['host-record=mail.example.test,192.0.2.25', 'mx-host=mxonly.example.test,mail.example.test,10', 'host-record=v6.example.test,2001:db8::25'],
  });
  client = createDnsClient({ servers: [dns.server], timeoutMs: 1000, tries: 1 });
});
after(async () => {
  await dns.stop();
});

const OFF = { requireFqdn: false, requireResolvable: false, rejectOurName: false };

async function helo(opts: Partial<HeloOptions>, input: string): Promise<string[]> {
  const check = heloCheck({ ...OFF, ourNames: ['mx.example.test', 'example.test'], dns: client, timeoutMs: 3000, ...opts });
  const replies = await policySession(new PolicyPipeline([check], { log, defaultTimeoutMs: 3000 }), input);
  return replies.slice(1).map((r) => r.slice(0, 9));
}

test('isFqdn: two or more LDH labels, no all-digit top label', () => {
  for (const ok of ['mail.example.test', 'a.b', 'mail.example.test.', 'x-1.example']) assert.ok(isFqdn(ok), ok);
  for (const bad of ['localhost', 'PC-1234', '', 'a..b', '-a.example', 'a_b.example', '192.0.2.1', 'a.123', '[192.0.2.1]']) assert.ok(!isFqdn(bad), bad);
});

test('all options off: any name is accepted, even a bare word', async () => {
  assert.deepEqual(await helo({}, 'HELO PC-1234\r\nHELO localhost\r\n'), ['250 local', '250 local']);
});

test('require_fqdn: a bare word is refused, an FQDN or an address literal is accepted', async () => {
  assert.deepEqual(await helo({ requireFqdn: true }, 'HELO PC-1234\r\nHELO mail.example.test\r\nHELO [192.0.2.5]\r\nHELO [IPv6:2001:db8::5]\r\n'), [
    '550 5.7.1', '250 local', '250 local', '250 local',
  ]);
  // A refused HELO leaves no identity: MAIL is out of sequence.
  assert.deepEqual(await helo({ requireFqdn: true }, 'HELO PC-1234\r\nMAIL FROM:<a@example.org>\r\n'), ['550 5.7.1', '503 5.5.1']);
});

test('require_resolvable: A, AAAA or MX found passes; NXDOMAIN and no records are refused', async () => {
  assert.deepEqual(
    await helo({ requireResolvable: true }, 'HELO mail.example.test\r\nHELO mxonly.example.test\r\nHELO v6.example.test\r\nHELO nothing.example.test\r\nHELO bare\r\n'),
    ['250 local', '250 local', '250 local', '550 5.7.1', '550 5.7.1'],
  );
});

test('require_resolvable: a DNS server that never answers gives 450 4.7.1, within the budget', async () => {
  const silent = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
  const dead = createDnsClient({ servers: [`127.0.0.1:${silent.address().port}`], timeoutMs: 200, tries: 1 });
  try {
    const started = Date.now();
    assert.deepEqual(await helo({ requireResolvable: true, dns: dead, timeoutMs: 2000 }, 'HELO mail.example.test\r\n'), ['450 4.7.1']);
    assert.ok(Date.now() - started < 2000);
  } finally {
    silent.close();
  }
});

test('reject_our_name: our host name, a local domain, or our address literal is refused', async () => {
  assert.deepEqual(
    await helo({ rejectOurName: true }, 'HELO MX.example.test\r\nHELO example.test.\r\nHELO [127.0.0.1]\r\nHELO client.example.org\r\n'),
    ['550 5.7.1', '550 5.7.1', '550 5.7.1', '421 4.7.0'],
  );
  assert.deepEqual(await helo({ rejectOurName: true }, 'HELO client.example.org\r\n'), ['250 local']);
});

test('the verdict is kept for the name: sending it again does not look it up again', async () => {
  const before = dns.queryCount();
  assert.deepEqual(await helo({ requireResolvable: true }, 'HELO gone.example.test\r\nHELO gone.example.test\r\nHELO mail.example.test\r\n'), [
    '550 5.7.1', '550 5.7.1', '250 local',
  ]);
  assert.equal(dns.queryCount() - before, 3 + 3, 'one round of A/AAAA/MX per distinct name');
});

test('reject_our_name: our IPv6 address in any text form is refused', async () => {
  const check = heloCheck({ ...OFF, rejectOurName: true, ourNames: ['mx.example.test'], dns: client, timeoutMs: 1000 });
  const session = newSessionSecurity({ id: 'S', peer: { address: '2001:db8::99', port: 1 }, local: { address: '2001:db8::1', port: 25 }, isRelayClient: false, nowMs: 0 });
  for (const [name, action] of [['[IPv6:2001:db8:0:0:0:0:0:1]', 'reject'], ['[IPv6:2001:DB8::0:1]', 'reject'], ['[IPv6:2001:db8::2]', 'continue']] as const) {
    const v = await check.run({ stage: 'helo', session, transaction: null, recipient: null, heloName: name, message: null, nowMs: 0 }, new AbortController().signal);
    assert.equal(v.action, action, name);
  }
});
