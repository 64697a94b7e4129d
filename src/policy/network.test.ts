// Client networks for verdict memory and greylisting: fixed examples and a property check against
// node's own BlockList (the address always lies inside the network we key it by).

import assert from 'node:assert/strict';
import { BlockList } from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import { clientNetwork, HOST_PREFIXES } from './network.ts';

test('client networks: IPv4 /24, IPv6 /64 by default; host prefixes; other prefixes', () => {
  assert.equal(clientNetwork('198.51.100.7'), '198.51.100.0/24');
  assert.equal(clientNetwork('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64');
  assert.equal(clientNetwork('2001:db8::1'), '2001:db8::/64');
  assert.equal(clientNetwork('::1'), '::/64');
  assert.equal(clientNetwork('::ffff:192.0.2.1', HOST_PREFIXES), '::ffff:c000:201/128');
  assert.equal(clientNetwork('198.51.100.7', HOST_PREFIXES), '198.51.100.7/32');
  assert.equal(clientNetwork('198.51.100.7', { ipv4: 20, ipv6: 48 }), '198.51.96.0/20');
  assert.equal(clientNetwork('2001:db8:abcd:12:3::4', { ipv4: 20, ipv6: 48 }), '2001:db8:abcd::/48');
  assert.equal(clientNetwork('255.255.255.255', { ipv4: 0, ipv6: 0 }), '0.0.0.0/0');
});

test('property: the address lies in its network, and every address of that network maps to it', () => {
  fc.assert(
    fc.property(fc.ipV4(), fc.ipV4(), fc.integer({ min: 0, max: 32 }), (a, b, prefix) => {
      const p = { ipv4: prefix, ipv6: 64 };
      const net = clientNetwork(a, p);
      const [base, bits] = net.split('/');
      const list = new BlockList();
      list.addSubnet(base, Number(bits), 'ipv4');
      assert.ok(list.check(a, 'ipv4'), `${a} in ${net}`);
      assert.equal(list.check(b, 'ipv4'), clientNetwork(b, p) === net);
    }),
  );
  fc.assert(
    fc.property(fc.ipV6(), fc.integer({ min: 0, max: 128 }), (a, prefix) => {
      const net = clientNetwork(a, { ipv4: 24, ipv6: prefix });
      const [base, bits] = net.split('/');
      const list = new BlockList();
      list.addSubnet(base, Number(bits), 'ipv6');
      assert.ok(list.check(a, 'ipv6'), `${a} in ${net}`);
    }),
  );
});
