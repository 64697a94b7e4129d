// MX resolution against a real DNS server (dnsmasq on loopback): preference order, random among
// equals, implicit MX, null MX, NXDOMAIN, no address, SERVFAIL and timeouts deferred, IPv6 and
// IPv4, address literals, and mail that would loop back to us. A stub UDP server plays the DNS
// server that answers SERVFAIL or nothing (bad peers the real one cannot be made to be).

import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, before, test } from 'node:test';
import { startDnsServer, type DnsTestServer } from '../../test/helpers/dns-server.ts';
import { createDnsClient, type DnsClient } from '../dns/resolver.ts';
import { resolveMx, selfAddresses, type MxResolution } from './mx.ts';

const Z = 'mx.test';
let dns: DnsTestServer;
let client: DnsClient;
const NOT_US = { hostnames: ['portcullis.self.test'], addresses: ['192.0.2.250'] };

/** A DNS server that answers every query with SERVFAIL (rcode 2), or never answers. */
async function stubDns(mode: 'servfail' | 'silent'): Promise<{ server: string; close(): void }> {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (msg, rinfo) => {
    if (mode === 'silent' || msg.length < 12) return;
    const out = Buffer.from(msg);
    out[2] = 0x81 | (msg[2] & 0x01); // QR, RD copied
    out[3] = 0x82; // RA, rcode SERVFAIL
    out.writeUInt16BE(0, 6);
    out.writeUInt16BE(0, 8);
    out.writeUInt16BE(0, 10);
    socket.send(out, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return { server: `127.0.0.1:${socket.address().port}`, close: () => socket.close() };
}

before(async () => {
  dns = await startDnsServer({
    zones: [Z],
    records: [
      `mx-host=order.${Z},b.${Z},10`, `mx-host=order.${Z},c.${Z},20`, `mx-host=order.${Z},a.${Z},10`,
      `host-record=a.${Z},192.0.2.1,2001:db8::1`, `host-record=b.${Z},192.0.2.2`, `host-record=c.${Z},2001:db8::3`,
      `host-record=implicit.${Z},192.0.2.7,2001:db8::7`,
      `mx-host=null.${Z},.,0`,
      `txt-record=noaddr.${Z},"exists"`,
      `mx-host=deadhosts.${Z},gone.${Z},10`,
      // We are us.mx.test (127.0.0.1): one MX more preferred than us, one as preferred, one less.
      `mx-host=backup.${Z},primary.${Z},5`, `mx-host=backup.${Z},us.${Z},10`, `mx-host=backup.${Z},peer.${Z},10`, `mx-host=backup.${Z},worse.${Z},20`,
      `host-record=primary.${Z},192.0.2.5`, `host-record=us.${Z},127.0.0.1`, `host-record=peer.${Z},192.0.2.6`, `host-record=worse.${Z},192.0.2.8`,
      `mx-host=loop.${Z},us.${Z},10`, `mx-host=loop.${Z},peer.${Z},20`,
      `mx-host=byname.${Z},portcullis.self.test,10`,
      `host-record=selfimplicit.${Z},127.0.0.1`,
    ],
  });
  client = createDnsClient({ servers: [dns.server], timeoutMs: 1000, tries: 1 });
});
after(() => dns.stop());

const us = { hostnames: ['portcullis.self.test'], addresses: selfAddresses([{ host: '127.0.0.1', port: 25 }, { host: '127.0.0.1', port: 2525 }], []) };
const hosts = (r: MxResolution) => (r.kind === 'candidates' ? r.candidates.map((c) => `${c.preference} ${c.host} ${c.address}`) : r);

test('preference order, equal preferences in random order, IPv6 before IPv4 for each host, port 25', async () => {
  const low = await resolveMx(`order.${Z}`, { dns: client, self: NOT_US, random: sequence([0.1, 0.9, 0.5]) });
  const high = await resolveMx(`order.${Z}`, { dns: client, self: NOT_US, random: sequence([0.9, 0.1, 0.5]) });
  const orders = [hosts(low), hosts(high)];
  assert.deepEqual(orders.map((o) => (o as string[]).slice(0, 3).map((l) => l.split(' ')[1]).join(',')).sort(), [`a.${Z},a.${Z},b.${Z}`, `b.${Z},a.${Z},a.${Z}`]);
  assert.deepEqual((hosts(low) as string[]).filter((l) => l.includes(`a.${Z}`)), [`10 a.${Z} 2001:db8::1`, `10 a.${Z} 192.0.2.1`]);
  assert.deepEqual((hosts(low) as string[]).at(-1), `20 c.${Z} 2001:db8::3`);
  assert.ok(low.kind === 'candidates' && low.candidates.every((c) => c.port === 25) && !low.isImplicit);
  const v4 = await resolveMx(`order.${Z}`, { dns: client, self: NOT_US, random: sequence([0.1, 0.9, 0.5]), preferIPv6: false });
  assert.deepEqual((hosts(v4) as string[]).filter((l) => l.includes(`a.${Z}`)), [`10 a.${Z} 192.0.2.1`, `10 a.${Z} 2001:db8::1`]);
});

test('equal preferences: both orders occur over many tries', async () => {
  const firsts = new Set<string>();
  let seed = 1;
  const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  for (let i = 0; i < 20; i++) {
    const r = await resolveMx(`order.${Z}`, { dns: client, self: NOT_US, random });
    if (r.kind === 'candidates') firsts.add(r.candidates[0].host);
  }
  assert.deepEqual([...firsts].sort(), [`a.${Z}`, `b.${Z}`]);
});

test('no MX: the domain itself is the implicit MX (A and AAAA)', async () => {
  const r = await resolveMx(`implicit.${Z}`, { dns: client, self: NOT_US });
  assert.deepEqual(hosts(r), [`0 implicit.${Z} 2001:db8::7`, `0 implicit.${Z} 192.0.2.7`]);
  assert.ok(r.kind === 'candidates' && r.isImplicit);
});

test('null MX fails at once with 556 5.1.10 (RFC 7505); NXDOMAIN and no address fail with 5.1.2', async () => {
  assert.deepEqual(await resolveMx(`null.${Z}`, { dns: client, self: NOT_US }), { kind: 'failed', reply: { code: 556, enhanced: '5.1.10', lines: [`Recipient address has null MX: null.${Z} accepts no mail`] } });
  const nx = await resolveMx(`nothere.${Z}`, { dns: client, self: NOT_US });
  assert.ok(nx.kind === 'failed' && nx.reply.code === 550 && nx.reply.enhanced === '5.1.2', JSON.stringify(nx));
  const noaddr = await resolveMx(`noaddr.${Z}`, { dns: client, self: NOT_US });
  assert.ok(noaddr.kind === 'failed' && noaddr.reply.enhanced === '5.1.2' && /no MX and no address/.test(noaddr.reply.lines[0]), JSON.stringify(noaddr));
  const dead = await resolveMx(`deadhosts.${Z}`, { dns: client, self: NOT_US });
  assert.ok(dead.kind === 'failed' && dead.reply.enhanced === '5.4.4', JSON.stringify(dead));
});

test('SERVFAIL and a DNS server that never answers defer (4.4.3)', async () => {
  for (const mode of ['servfail', 'silent'] as const) {
    const stub = await stubDns(mode);
    try {
      const bad = createDnsClient({ servers: [stub.server], timeoutMs: 200, tries: 1 });
      const started = Date.now();
      const r = await resolveMx('example.org', { dns: bad, self: NOT_US });
      assert.ok(r.kind === 'deferred' && r.reply.code === 451 && r.reply.enhanced === '4.4.3', `${mode}: ${JSON.stringify(r)}`);
      assert.ok(Date.now() - started < 3000, `${mode}: bounded by the DNS timeout`);
    } finally {
      stub.close();
    }
  }
});

test('never to ourselves: MXs as preferred as us or less are dropped; only us left is a loop (5.4.6)', async () => {
  assert.deepEqual(hosts(await resolveMx(`backup.${Z}`, { dns: client, self: us })), [`5 primary.${Z} 192.0.2.5`]);
  const loop = await resolveMx(`loop.${Z}`, { dns: client, self: us });
  assert.ok(loop.kind === 'failed' && loop.reply.code === 554 && loop.reply.enhanced === '5.4.6', JSON.stringify(loop));
  const byName = await resolveMx(`byname.${Z}`, { dns: client, self: us });
  assert.ok(byName.kind === 'failed' && byName.reply.enhanced === '5.4.6', 'our host name as the MX, even unresolvable');
  const implicit = await resolveMx(`selfimplicit.${Z}`, { dns: client, self: us });
  assert.ok(implicit.kind === 'failed' && implicit.reply.enhanced === '5.4.6', 'an implicit MX that is us');
  // Not us at all: the same domain delivers to every host.
  assert.equal((hosts(await resolveMx(`backup.${Z}`, { dns: client, self: NOT_US })) as string[]).length, 4);
});

test('address literals go to the address; ours is a loop', async () => {
  assert.deepEqual(hosts(await resolveMx('[192.0.2.9]', { dns: client, self: NOT_US })), ['0 192.0.2.9 192.0.2.9']);
  assert.deepEqual(hosts(await resolveMx('[IPv6:2001:DB8:0::9]', { dns: client, self: NOT_US })), ['0 2001:db8::9 2001:db8::9']);
  const r = await resolveMx('[127.0.0.1]', { dns: client, self: us });
  assert.ok(r.kind === 'failed' && r.reply.enhanced === '5.4.6');
});

test('selfAddresses: port-25 listeners only; a wildcard is every interface address', () => {
  assert.deepEqual(selfAddresses([{ host: '0.0.0.0', port: 25 }, { host: '10.0.0.1', port: 587 }], ['127.0.0.1', '::1', '192.0.2.4']), ['127.0.0.1', '192.0.2.4']);
  assert.deepEqual(selfAddresses([{ host: '::', port: 25 }], ['127.0.0.1', '0:0::1']), ['127.0.0.1', '::1']);
  assert.deepEqual(selfAddresses([{ host: '127.0.0.1', port: 2525 }], ['127.0.0.1']), []);
});

function sequence(values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length];
}
