import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { overlaps, parseVerdictKey, parseVerdictTarget, verdictStoreKey, type VerdictTarget } from './verdict-memory.ts';
import { networkOf } from '../net/cidr.ts';

test('verdict keys round-trip, IPv6 networks (with their colons) and keys with colons included', () => {
  for (const [check, stage, network, key] of [
    ['dnsbl', 'connect', '192.0.2.7/32', ''],
    ['dnsbl', 'rcpt', '2001:db8:1:2::/64', 'user@example.test'],
    ['batv', 'rcpt', '::/0', 'a:b:c'],
  ] as const) {
    assert.deepEqual(parseVerdictKey(verdictStoreKey(check, stage, network, key)), { check, stage, network, key });
  }
  assert.equal(parseVerdictKey('v1:greylist:x'), null);
  assert.equal(parseVerdictKey('v1:verdict:dnsbl:connect:not-a-network:'), null);
});

test('any client network the pipeline builds parses back out of its key (fast-check)', () => {
  const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));
  const v6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((g) => g.map((x) => x.toString(16)).join(':'));
  fc.assert(
    fc.property(fc.oneof(v4, v6), fc.integer({ min: 0, max: 32 }), fc.integer({ min: 0, max: 128 }), fc.string(), (address, p4, p6, key) => {
      const network = networkOf(address, { ipv4: p4, ipv6: p6 });
      const parsed = parseVerdictKey(verdictStoreKey('dnsbl', 'rcpt', network, key));
      assert.deepEqual(parsed, { check: 'dnsbl', stage: 'rcpt', network, key });
    }),
  );
});

test('targets: an address or a network, with precise errors; overlap either way', () => {
  const t = (s: string): VerdictTarget => {
    const r = parseVerdictTarget(s);
    assert.equal(typeof r, 'object', String(r));
    return r as VerdictTarget;
  };
  assert.match(String(parseVerdictTarget('10.1.2.3/8')), /host bits set: did you mean 10\.0\.0\.0\/8\?/);
  assert.match(String(parseVerdictTarget('10.0.0.0/33')), /prefix must be 0 to 32/);
  assert.match(String(parseVerdictTarget('example.test')), /not an IP address or network/);
  assert.equal(overlaps('192.0.2.0/24', t('192.0.2.77')), true, 'the address is in the remembered network');
  assert.equal(overlaps('192.0.2.77/32', t('192.0.2.0/24')), true, 'the remembered host is in the target network');
  assert.equal(overlaps('192.0.3.0/24', t('192.0.2.0/24')), false);
  assert.equal(overlaps('2001:db8:1:2::/64', t('2001:db8::/32')), true);
  assert.equal(overlaps('2001:db8:1:2::/64', t('192.0.2.1')), false, 'families never overlap');
});
