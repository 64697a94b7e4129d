// The `mx` route end to end against a real Postfix as the remote MX: a loopback DNS server
// (dnsmasq) names Postfix's address as postfix.test's MX, `portcullis serve` delivers there on
// port 25 with its reverse-path BATV-signed, Postfix delivers one recipient and bounces another,
// and its bounce comes back to the signed address through Portcullis (accepted, tag stripped,
// delivered to the sender's Maildir). A bounce of mail that never went out through us (an
// unsigned return path) is refused 550 5.7.1, which Postfix logs. Needs root (port 25 on
// 127.0.0.2) and Postfix and dnsmasq (scripts/test-deps.sh).

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { startCliServer } from '../helpers/cli-server.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { hasPostfix, startPostfix } from '../helpers/postfix.ts';
import { smtpConnect } from '../helpers/smtp-client.ts';

const MX_HOST = '127.0.0.2';
const SKIP = hasPostfix() && process.getuid?.() === 0 ? false : 'needs Postfix and root (port 25 on 127.0.0.2; scripts/test-deps.sh)';
const WAIT_MS = 30_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function send(port: number, from: string, to: string[], body: string): Promise<void> {
  const c = await smtpConnect(port);
  try {
    const ok = async (line: string, code: RegExp): Promise<void> => {
      const r = await c.send(line);
      assert.match(r, code, `${line.slice(0, 40)} -> ${r}`);
    };
    await ok('EHLO client.sender.test', /^250[ -]/);
    await ok(`MAIL FROM:<${from}>`, /^250 /);
    for (const r of to) await ok(`RCPT TO:<${r}>`, /^250 /);
    await ok('DATA', /^354 /);
    await ok(`${body.replace(/\n/g, '\r\n')}.\r\n`, /^250 /);
    await ok('QUIT', /^221 /);
  } finally {
    c.close();
  }
}

function maildirFiles(root: string, address: string): string[] {
  const dir = path.join(root, address, 'new');
  return existsSync(dir) ? readdirSync(dir).map((f) => readFileSync(path.join(dir, f), 'utf8')) : [];
}

test('mx route to a real Postfix as the remote MX: delivered with a BATV-signed return path; its bounce to the tag comes back, one to the plain address is refused', { skip: SKIP, timeout: 120_000 }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-mx-pf-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const keyFile = path.join(dir, 'batv.key');
  writeFileSync(keyFile, 'mx-round-trip-secret-0123456789\n');
  const maildir = path.join(dir, 'mail');

  const dns = await startDnsServer({ zones: ['postfix.test'], records: ['mx-host=postfix.test,mx.postfix.test,10', `host-record=mx.postfix.test,${MX_HOST}`] });
  t.after(() => dns.stop());
  const server = await startCliServer({
    workers: 1,
    localDomains: ['sender.test'],
    routes: ['default = { via = "mx", tls = "none" }', `local = ${JSON.stringify(`maildir:${maildir}`)}`],
    extraToml: `[dns]\nservers = ["${dns.server}"]\n[batv]\ndomains = ["sender.test"]\nkeys = [{ id = 0, secret_file = ${JSON.stringify(keyFile)} }]\n`,
  });
  t.after(() => server.cleanup());
  const pf = await startPostfix({
    listen: { host: MX_HOST, port: 25 },
    domains: ['postfix.test'],
    users: ['known@postfix.test'],
    bounceUsers: ['gone@postfix.test'],
    relay: { host: '127.0.0.1', port: server.port },
  });
  t.after(() => pf.stop());

  // Out through the mx route: MX lookup at our DNS server, port 25 of the MX host.
  await send(server.port, 'alice@sender.test', ['known@postfix.test', 'gone@postfix.test'], 'Subject: via mx\n\nhello over the MX route\n');
  const [delivered] = await pf.waitForReceived(1, WAIT_MS);
  assert.equal(delivered.recipient, 'known@postfix.test');
  assert.match(delivered.reversePath, /^prvs=0\d{3}[0-9a-f]{6}=alice@sender\.test$/, 'the return path is BATV-signed');
  assert.match(delivered.bytes.toString('utf8'), /hello over the MX route/);
  assert.match(pf.log(), /client=\S*\[127\.0\.0\.1\]/, 'Postfix was reached as the MX');

  // Postfix's bounce for gone@ goes to the signed address through its relayhost (us): accepted,
  // the tag stripped, delivered to the sender's Maildir.
  let bounce: string | undefined;
  const end = Date.now() + WAIT_MS;
  while ((bounce = maildirFiles(maildir, 'alice@sender.test')[0]) === undefined) {
    if (Date.now() > end) assert.fail(`no bounce reached the sender; Postfix log:\n${pf.log()}\nour log:\n${server.logText()}`);
    await sleep(100);
  }
  assert.match(bounce, /^Return-Path: <>/m);
  assert.match(bounce, /Final-Recipient: rfc822; ?gone@postfix\.test/i);
  assert.match(bounce, /Subject: via mx/, 'it is the bounce of the message that went out');

  // Backscatter: mail that never went out through us, its bounce to the plain address: refused.
  const c = await smtpConnect(pf.port, { host: MX_HOST });
  try {
    await c.send('EHLO forger.example');
    assert.match(await c.send('MAIL FROM:<alice@sender.test>'), /^250 /);
    assert.match(await c.send('RCPT TO:<gone@postfix.test>'), /^250 /);
    assert.match(await c.send('DATA'), /^354 /);
    assert.match(await c.send('Subject: forged\r\n\r\nnot ours\r\n.\r\n'), /^250 /);
    await c.send('QUIT');
  } finally {
    c.close();
  }
  const refused = await pf.waitForLog(/to=<alice@sender\.test>.*said: 550 5\.7\.1/, WAIT_MS);
  assert.match(refused, /status=bounced/);
  assert.equal(maildirFiles(maildir, 'alice@sender.test').length, 1, 'the forged bounce was not delivered');
});
