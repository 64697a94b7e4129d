// Two hops: opendkim signs through our milter client on the first server, and the second server's
// own verifier (the authentication check, dnsmasq on loopback publishing opendkim's key) reports
// dkim=pass and, the signature aligned with From, dmarc=pass under p=reject, with SPF failing.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { defaultConfig } from '../../src/config/types.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { startOpendkim } from '../helpers/milter-peers.ts';
import { serverWithMilter, storedById } from '../helpers/milter-session.ts';
import { startTestServer } from '../helpers/server.ts';
import { smtpConnect } from '../helpers/smtp-client.ts';

async function sendOne(port: number, mailFrom: string, content: string): Promise<string> {
  const c = await smtpConnect(port);
  assert.match(await c.send('EHLO client.example.test'), /^250 /m);
  assert.match(await c.send(`MAIL FROM:<${mailFrom}>`), /^250 /);
  assert.match(await c.send('RCPT TO:<alice@example.test>'), /^250 /);
  assert.match(await c.send('DATA'), /^354 /);
  const reply = await c.send(`${content.replace(/\r\n$/, '').replace(/^\./gm, '..')}\r\n.`);
  await c.send('QUIT');
  c.close();
  return reply;
}

test('opendkim signs via the milter on one hop; our verifier on the next sees dkim=pass and dmarc=pass', { timeout: 120_000 }, async (t) => {
  const dkim = await startOpendkim();
  t.after(dkim.stop);
  const first = await serverWithMilter(t, dkim.port);
  assert.match(await sendOne(first.port, 'a@example.test', 'From: <a@example.test>\r\nTo: <alice@example.test>\r\nSubject: hop\r\n\r\nhello\r\n'), /^250 /);
  const [signed] = [...(await storedById(first.spoolDir)).values()];
  assert.match(signed, /^DKIM-Signature: /, dkim.log());

  const txt = dkim.publicKeyTxt.match(/.{1,200}/g)!.map((s) => `"${s}"`).join(',');
  const dns = await startDnsServer({
    zones: ['example.test'],
    records: [`txt-record=${dkim.selector}._domainkey.${dkim.domain},${txt}`, 'txt-record=example.test,"v=spf1 -all"', 'txt-record=_dmarc.example.test,"v=DMARC1; p=reject"'],
  });
  t.after(() => dns.stop());
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  cfg.smtp.hostname = 'mx2.example.test';
  cfg.relay.networks = [];
  cfg.dns.servers = [dns.server];
  cfg.dkim.enabled = true;
  cfg.dmarc.enabled = true;
  cfg.dmarc.enforce = true;
  const second = await startTestServer(cfg, { policy: buildPipeline(cfg, pino({ level: 'silent' }))! });
  t.after(() => second.stop());
  assert.match(await sendOne(second.port, 'a@example.test', signed), /^250 /);
  const [stored] = [...(await storedById(second.spoolDir)).values()];
  const fields = stored.slice(0, stored.indexOf('\r\n\r\n')).replace(/\r\n(?=[ \t])/g, '').split('\r\n').filter((l) => /^Authentication-Results:/i.test(l));
  assert.equal(fields.length, 1);
  assert.match(fields[0], /^Authentication-Results: mx2\.example\.test; spf=fail smtp\.mailfrom=example\.test; dkim=pass header\.i=@example\.test header\.s=sel1 .*; dmarc=pass /);
});
