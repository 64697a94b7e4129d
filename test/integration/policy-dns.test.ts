// The policy engine end to end: the real `portcullis serve` configured from TOML, asking a real
// DNS server (dnsmasq on loopback) through dns.servers, with DNS lists, SPF and greylisting, and a
// real redis-server shared by two nodes. Clients use several loopback source addresses
// (127.0.0.1 is listed in the test DNS list, 127.0.0.2 is not).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { startCliServer, type CliServer } from '../helpers/cli-server.ts';
import { startDnsServer, type DnsTestServer } from '../helpers/dns-server.ts';
import { startRedisServer, type RedisTestServer } from '../helpers/redis-server.ts';
import { smtpConnect } from '../helpers/smtp-client.ts';

let dns: DnsTestServer;
let redis: RedisTestServer;

before(async () => {
  dns = await startDnsServer({
    zones: ['zen.test', 'wl.test', 'sender.test', 'forged.test'],
    records: [
      'address=/1.0.0.127.zen.test/127.0.0.2',
      'address=/3.0.0.127.zen.test/127.0.0.4',
      'address=/3.0.0.127.wl.test/127.0.0.2',
      'txt-record=sender.test,"v=spf1 ip4:127.0.0.0/29 -all"',
      'txt-record=forged.test,"v=spf1 ip4:192.0.2.0/24 -all"',
    ],
  });
  redis = await startRedisServer();
});
after(async () => {
  await dns.stop();
  await redis.stop();
});

function policyToml(extra: string): string {
  return `[policy]
checks = ["dnsbl", "spf", "greylist"]
[dns]
servers = ["${dns.server}"]
timeout_ms = 1000
tries = 1
[[dnsbl]]
zone = "zen.test"
weight = 2
[[dnsbl]]
zone = "wl.test"
weight = -5
[dnslists]
threshold = 2
allow_threshold = -1
[spf]
enabled = true
${extra}`;
}

async function messagesIn(spoolDir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of scanSpool(spoolDir)) {
    const m = await readMessage(spoolDir, entry.envelope.queueId, entry.location);
    if (m !== null) out.push(m.content.toString('latin1'));
  }
  return out;
}

test('DNS list and SPF from TOML: a listed client is refused naming the list; SPF pass prepends Received-SPF, fail is refused', async (t) => {
  const server: CliServer = await startCliServer({ workers: 2, relayNetworks: [], extraToml: policyToml('') });
  t.after(() => server.cleanup());

  const listed = await smtpConnect(server.port, { localAddress: '127.0.0.1' });
  assert.match(await listed.send('EHLO client.sender.test'), /^250 /m);
  assert.match(await listed.send('MAIL FROM:<a@sender.test>'), /^250 /);
  assert.equal(await listed.send('RCPT TO:<alice@example.test>'), '554 5.7.1 Service unavailable; client [127.0.0.1] blocked using zen.test');
  assert.match(await listed.send('RSET'), /^250 /);
  assert.match(await listed.send('MAIL FROM:<b@sender.test>'), /^250 /);
  assert.match(await listed.send('RCPT TO:<bob@example.test>'), /^554 5\.7\.1 .*zen\.test/, 'RSET does not launder it');
  listed.close();

  const clean = await smtpConnect(server.port, { localAddress: '127.0.0.2' });
  await clean.send('EHLO client.sender.test');
  assert.match(await clean.send('MAIL FROM:<a@forged.test>'), /^550 5\.7\.23 /);
  assert.match(await clean.send('MAIL FROM:<a@sender.test>'), /^250 /);
  assert.match(await clean.send('RCPT TO:<alice@example.test>'), /^250 /);
  assert.match(await clean.send('DATA'), /^354 /);
  // A forged Authentication-Results under our name (the server is mx.example.test).
  assert.match(await clean.send('Subject: hi\r\nAuthentication-Results: MX.example.test; spf=pass smtp.mailfrom=bank.example\r\n\r\nhello\r\n.'), /^250 /);
  await clean.send('QUIT');
  clean.close();

  // Listed by the block list and the allow list: score 2 - 5 = -3, so accepted.
  const allowed = await smtpConnect(server.port, { localAddress: '127.0.0.3' });
  await allowed.send('EHLO client.sender.test');
  await allowed.send('MAIL FROM:<c@sender.test>');
  assert.match(await allowed.send('RCPT TO:<carol@example.test>'), /^250 /);
  allowed.close();

  await server.stop();
  const messages = await messagesIn(server.spoolDir);
  assert.equal(messages.length, 1);
  const [spf, received] = messages[0].split('\r\n').reduce<string[][]>((fields, line) => {
    if (/^[ \t]/.test(line) && fields.length > 0) fields[fields.length - 1].push(line);
    else fields.push([line]);
    return fields;
  }, []);
  assert.match(received[0], /^Received: /);
  assert.match(spf.join('\r\n'), /^Received-SPF: pass /);
  assert.match(messages[0], /\r\nX-Original-Authentication-Results: MX\.example\.test; spf=pass smtp\.mailfrom=bank\.example\r\n/, 'RFC 8601 5: renamed');
  assert.doesNotMatch(messages[0], /\r\nAuthentication-Results:/);
  assert.match(server.logText(), /"check":"dnsbl"/);
});

test('greylisting across two nodes sharing Redis: retried at the other node after the delay, accepted', async (t) => {
  const toml = `[state]\nstore = "${redis.url}"\n[greylist]\nenabled = true\ndelay_seconds = 1\n[policy]\nchecks = ["greylist"]\n`;
  const nodeA = await startCliServer({ workers: 1, relayNetworks: [], extraToml: toml });
  t.after(() => nodeA.cleanup());
  const nodeB = await startCliServer({ workers: 1, relayNetworks: [], extraToml: toml });
  t.after(() => nodeB.cleanup());
  const attempt = async (port: number): Promise<string> => {
    const c = await smtpConnect(port, { localAddress: '127.0.0.5' });
    await c.send('HELO mta.sender.test');
    await c.send('MAIL FROM:<news@sender.test>');
    const r = await c.send('RCPT TO:<dave@example.test>');
    c.close();
    return r;
  };
  assert.match(await attempt(nodeA.port), /^451 4\.7\.1 /);
  assert.match(await attempt(nodeB.port), /^451 4\.7\.1 /, 'too early, at the other node');
  await sleep(1200);
  assert.match(await attempt(nodeB.port), /^250 /, 'the other node knows the triplet waited');
});
