// The SPF check end to end over a real socket: a real server (connection, machine, pipeline,
// spool) asking a real DNS server (dnsmasq on loopback). A forged sender domain is refused at MAIL
// with 550 5.7.23; a permitted one is accepted and the spooled message carries Received-SPF,
// prepended directly above our Received field (RFC 7208 9.1). The client is 127.0.0.1, not a
// relay client here.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { defaultConfig } from '../../src/config/types.ts';
import { createDnsClient } from '../../src/dns/resolver.ts';
import { SPF_DEFAULTS, spfCheck } from '../../src/policy/checks/spf/check.ts';
import { PolicyPipeline } from '../../src/policy/pipeline.ts';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { startTestServer } from '../helpers/server.ts';
import { smtpConnect } from '../helpers/smtp-client.ts';

/** Header fields of a message (continuation lines joined to their field, folds kept). */
function headerFields(message: string): string[] {
  const head = message.slice(0, message.indexOf('\r\n\r\n'));
  const fields: string[] = [];
  for (const line of head.split('\r\n')) {
    if (/^[ \t]/.test(line) && fields.length > 0) fields[fields.length - 1] += `\r\n${line}`;
    else fields.push(line);
  }
  return fields;
}

test('SPF over a real socket: forged domain refused 550 5.7.23; a pass is spooled with Received-SPF above Received', async (t) => {
  const dns = await startDnsServer({
    zones: ['spf.test'],
    records: ['txt-record=local.spf.test,"v=spf1 ip4:127.0.0.1 -all"', 'txt-record=forged.spf.test,"v=spf1 ip4:192.0.2.1 -all"'],
  });
  t.after(() => dns.stop());
  const check = spfCheck({ ...SPF_DEFAULTS, dns: createDnsClient({ servers: [dns.server], timeoutMs: 1000, tries: 1 }), hostname: 'mx.example.test' });
  const pipeline = new PolicyPipeline([check], { log: pino({ level: 'silent' }), defaultTimeoutMs: 5000 });
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  cfg.smtp.hostname = 'mx.example.test';
  cfg.relay.networks = [];
  const server = await startTestServer(cfg, { policy: pipeline });
  t.after(() => server.stop());

  const c = await smtpConnect(server.port);
  assert.match(await c.send('EHLO client.spf.test'), /^250 /m);
  assert.equal(await c.send('MAIL FROM:<a@forged.spf.test>'), '550 5.7.23 SPF validation failed: forged.spf.test does not designate 127.0.0.1 as permitted sender');
  assert.match(await c.send('RSET'), /^250 /);
  assert.match(await c.send('MAIL FROM:<b@forged.spf.test>'), /^550 5\.7\.23 /, 'remembered for the domain');
  assert.equal(await c.send('MAIL FROM:<a@local.spf.test>'), '250 2.1.0 Sender ok');
  assert.match(await c.send('RCPT TO:<alice@example.test>'), /^250 /);
  assert.match(await c.send('DATA'), /^354 /);
  assert.match(await c.send('Subject: hi\r\n\r\nhello\r\n.'), /^250 /);
  await c.send('QUIT');
  c.close();

  const messages: string[] = [];
  for await (const entry of scanSpool(server.spoolDir)) {
    const m = await readMessage(server.spoolDir, entry.envelope.queueId, entry.location);
    if (m !== null) messages.push(m.content.toString('latin1'));
  }
  assert.equal(messages.length, 1);
  const fields = headerFields(messages[0]);
  assert.match(fields[1], /^Received: from client\.spf\.test /);
  assert.equal(
    fields[0].replace(/\r\n(?=[ \t])/g, ''),
    'Received-SPF: pass (mx.example.test: domain of a@local.spf.test designates 127.0.0.1 as permitted sender) client-ip=127.0.0.1;' +
      ' envelope-from="a@local.spf.test"; helo=client.spf.test; receiver=mx.example.test; identity=mailfrom;',
  );
  assert.equal(fields[2], 'Subject: hi');
});
