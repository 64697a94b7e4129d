// The pure IP validators against node:net's (the reference they replace in the sans-I/O core),
// over generated addresses and over random text from the characters addresses are made of.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import { canonicalIp, formatIPv6, ipFamily, ipv6Groups, isIPv4, isIPv6, unmapIPv4, withoutZone } from './ip.ts';

const SEED = 20261201;
const RUNS = 2000;

/** node:net's answer without its zone index extension (RFC 5321 IPv6-addr has none). */
const nodeIsIPv6 = (text: string): boolean => net.isIPv6(text) && !text.includes('%');

test('examples: forms node:net accepts and refuses, and the ones it accepts that we do not (zones)', () => {
  for (const good of ['0.0.0.0', '192.0.2.1', '255.255.255.255']) assert.ok(isIPv4(good), good);
  for (const bad of ['01.2.3.4', '1.2.3.256', '1.2.3', '1.2.3.4.', ' 1.2.3.4', '1.2.3.4 ', '']) assert.ok(!isIPv4(bad), bad);
  for (const good of ['::', '::1', '1::', '1::2:3:4:5:6:7', '1:2:3:4:5:6:7::', '::ffff:192.0.2.1', '1:2:3:4:5:6:1.2.3.4', 'FE80::A']) {
    assert.ok(isIPv6(good), good);
  }
  for (const bad of [':::', '1::2::3', ':1::2', '1:', '00001::', '1.2.3.4::', '1:2:3:4:5:6::1.2.3.4', '1:2:3:4:5:6:7:1.2.3.4', 'fe80::1%eth0', '::ffff:01.2.3.4']) {
    assert.ok(!isIPv6(bad), bad);
  }
  assert.equal(ipFamily('192.0.2.1'), 4);
  assert.equal(ipFamily('2001:db8::1'), 6);
  assert.equal(ipFamily('example.test'), 0);
  assert.equal(withoutZone('fe80::1%eth0'), 'fe80::1');
  assert.equal(canonicalIp('2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
  assert.equal(canonicalIp('fe80::0:1%eth0'), 'fe80::1');
  assert.equal(canonicalIp('192.0.2.1'), '192.0.2.1');
});

test('the IPv4-mapped rule: ::ffff:a.b.c.d is the IPv4 client, anything else is kept', () => {
  assert.equal(unmapIPv4('::ffff:192.0.2.1'), '192.0.2.1');
  assert.equal(unmapIPv4('::FFFF:192.0.2.1'), '192.0.2.1');
  assert.equal(unmapIPv4('192.0.2.1'), '192.0.2.1');
  assert.equal(unmapIPv4('2001:db8::1'), '2001:db8::1');
  assert.equal(unmapIPv4('::ffff:c000:201'), '::ffff:c000:201');
});

test('property: generated addresses are accepted as node:net accepts them', () => {
  fc.assert(
    fc.property(fc.ipV4(), (a) => isIPv4(a) && ipFamily(a) === 4 && !isIPv6(a)),
    { seed: SEED, numRuns: RUNS },
  );
  fc.assert(
    fc.property(fc.ipV6(), (a) => isIPv6(a) && ipFamily(a) === 6 && !isIPv4(a)),
    { seed: SEED, numRuns: RUNS },
  );
});

test('property: random text from address characters gets node:net\'s answer', () => {
  const text = fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.%'), maxLength: 46 });
  fc.assert(
    fc.property(text, (s) => isIPv4(s) === net.isIPv4(s) && isIPv6(s) === nodeIsIPv6(s)),
    { seed: SEED, numRuns: 20_000 },
  );
  const dotted = fc.string({ unit: fc.constantFrom(...'0123456789.'), minLength: 5, maxLength: 17 });
  fc.assert(fc.property(dotted, (s) => isIPv4(s) === net.isIPv4(s)), { seed: SEED, numRuns: 20_000 });
  // Near-valid forms: a valid address with one character changed, dropped or doubled.
  const mutated = fc.tuple(fc.oneof(fc.ipV4(), fc.ipV6()), fc.nat(), fc.constantFrom(...'0f:.9g'), fc.constantFrom('set', 'drop', 'double'))
    .map(([a, at, c, how]) => {
      const i = at % a.length;
      return how === 'set' ? a.slice(0, i) + c + a.slice(i + 1) : how === 'drop' ? a.slice(0, i) + a.slice(i + 1) : a.slice(0, i) + a[i] + a.slice(i);
    });
  fc.assert(
    fc.property(mutated, (s) => isIPv4(s) === net.isIPv4(s) && isIPv6(s) === nodeIsIPv6(s)),
    { seed: SEED, numRuns: 20_000 },
  );
});

test('property: ipv6Groups and formatIPv6 round-trip to the RFC 5952 form node:net agrees with', () => {
  fc.assert(
    fc.property(fc.ipV6(), (a) => {
      const text = formatIPv6(ipv6Groups(a));
      assert.ok(isIPv6(text));
      assert.deepEqual(ipv6Groups(text), ipv6Groups(a));
      assert.equal(formatIPv6(ipv6Groups(text)), text);
      const list = new net.BlockList();
      list.addAddress(a, 'ipv6');
      assert.ok(list.check(text, 'ipv6'), `${a} = ${text}`);
    }),
    { seed: SEED, numRuns: RUNS },
  );
});
