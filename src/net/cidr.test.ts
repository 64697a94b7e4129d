// CIDR parsing, masking and matching: examples, and properties against node's BlockList.

import assert from 'node:assert/strict';
import { BlockList } from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import { isInNetworks, networkBase, networkList, networkOf, parseCidr } from './cidr.ts';

const SEED = 20261201;
const RUNS = 1000;

test('parseCidr: networks, bare hosts, and what is wrong', () => {
  assert.deepEqual(parseCidr('192.0.2.0/24'), { family: 4, address: '192.0.2.0', prefix: 24 });
  assert.deepEqual(parseCidr('192.0.2.7'), { family: 4, address: '192.0.2.7', prefix: 32 });
  assert.deepEqual(parseCidr('2001:db8::/32'), { family: 6, address: '2001:db8::', prefix: 32 });
  assert.deepEqual(parseCidr('::ffff:10.0.0.0/104'), { family: 6, address: '::ffff:10.0.0.0', prefix: 104 });
  assert.deepEqual(parseCidr('example.test/8'), { kind: 'not-an-address' });
  assert.deepEqual(parseCidr('fe80::1%eth0'), { kind: 'not-an-address' });
  assert.deepEqual(parseCidr('10.0.0.0/33'), { kind: 'bad-prefix', prefixText: '33', maxPrefix: 32 });
  assert.deepEqual(parseCidr('10.0.0.0/x'), { kind: 'bad-prefix', prefixText: 'x', maxPrefix: 32 });
  assert.deepEqual(parseCidr('10.1.2.3/8'), { kind: 'host-bits', network: '10.0.0.0', prefix: 8 });
  assert.deepEqual(parseCidr('2001:db8::1/64'), { kind: 'host-bits', network: '2001:db8::', prefix: 64 });
});

test('networkOf: the fast IPv4 prefixes, other prefixes, IPv6, zones, and non-addresses', () => {
  assert.equal(networkOf('198.51.100.7', { ipv4: 24, ipv6: 64 }), '198.51.100.0/24');
  assert.equal(networkOf('198.51.100.7', { ipv4: 32, ipv6: 64 }), '198.51.100.7/32');
  assert.equal(networkOf('198.51.100.7', { ipv4: 20, ipv6: 64 }), '198.51.96.0/20');
  assert.equal(networkOf('2001:db8:1:2:3::4', { ipv4: 24, ipv6: 64 }), '2001:db8:1:2::/64');
  assert.equal(networkOf('fe80::1:2%eth0', { ipv4: 24, ipv6: 112 }), 'fe80::1:0/112');
  assert.equal(networkOf('not an address', { ipv4: 24, ipv6: 64 }), 'not an address');
});

test('isInNetworks: IPv4-mapped peers match IPv4 networks; zones and junk', () => {
  const list = networkList(['127.0.0.0/8', '::1/128', '192.0.2.7', 'fe80::/10']);
  assert.ok(isInNetworks(list, '127.0.0.1'));
  assert.ok(isInNetworks(list, '::ffff:127.0.0.1'));
  assert.ok(isInNetworks(list, '::1'));
  assert.ok(isInNetworks(list, '192.0.2.7'));
  assert.ok(!isInNetworks(list, '192.0.2.8'));
  assert.ok(isInNetworks(list, 'fe80::1%eth0'));
  assert.ok(!isInNetworks(list, '2001:db8::1'));
  assert.ok(!isInNetworks(list, 'localhost'));
});

test('property: an address lies in its network, and the network matches exactly the addresses that map to it', () => {
  fc.assert(
    fc.property(fc.ipV4(), fc.ipV4(), fc.integer({ min: 0, max: 32 }), (a, b, prefix) => {
      const base = networkBase(a, prefix);
      const list = new BlockList();
      list.addSubnet(base, prefix, 'ipv4');
      assert.ok(list.check(a, 'ipv4'));
      assert.equal(list.check(b, 'ipv4'), networkBase(b, prefix) === base);
      assert.deepEqual(parseCidr(`${base}/${prefix}`), { family: 4, address: base, prefix });
    }),
    { seed: SEED, numRuns: RUNS },
  );
  fc.assert(
    fc.property(fc.ipV6(), fc.integer({ min: 0, max: 128 }), (a, prefix) => {
      const base = networkBase(a, prefix);
      const list = networkList([`${base}/${prefix}`]);
      assert.ok(isInNetworks(list, a), `${a} in ${base}/${prefix}`);
      assert.deepEqual(parseCidr(`${base}/${prefix}`), { family: 6, address: base, prefix });
    }),
    { seed: SEED, numRuns: RUNS },
  );
});
