// Authentication results end to end over a real socket: a real server (connection, machine,
// pipeline with the SPF and authentication checks from their builders, spool) asking a real DNS
// server (dnsmasq on loopback) that publishes an RSA DKIM key made here, SPF and DMARC records.
// Messages are signed with mailauth's dkimSign. Each stored message must carry exactly one
// Authentication-Results field under our authserv-id, with spf, dkim and dmarc results; a
// DMARC fail under p=reject is refused 550 5.7.1 only with dmarc.enforce; every message of one
// session is verified (pipelined BDAT too, and a body read back from its body file); a forged
// field under our name does not survive as Authentication-Results.

import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, test } from 'node:test';
import { dkimSign } from 'mailauth';
import { pino } from 'pino';
import { defaultConfig, type Config } from '../../src/config/types.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { startDnsServer, type DnsTestServer } from '../helpers/dns-server.ts';
import { startTestServer } from '../helpers/server.ts';
import { SmtpClient, smtpConnect } from '../helpers/smtp-client.ts';

const HOST = 'mx.example.test';
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const KEY_PEM = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const KEY_B64 = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');

let dns: DnsTestServer;

before(async () => {
  // A TXT record longer than 255 octets is several strings (ECOSYSTEM.md).
  const txt = `v=DKIM1; k=rsa; p=${KEY_B64}`;
  const strings = txt.match(/.{1,200}/g)!.map((s) => `"${s}"`).join(',');
  dns = await startDnsServer({
    zones: ['signed.test', 'strict.test', 'other.test'],
    records: [
      `txt-record=sel1._domainkey.signed.test,${strings}`,
      'txt-record=signed.test,"v=spf1 ip4:127.0.0.1 -all"',
      'txt-record=_dmarc.signed.test,"v=DMARC1; p=reject"',
      'txt-record=other.test,"v=spf1 ip4:127.0.0.1 -all"',
      'txt-record=_dmarc.strict.test,"v=DMARC1; p=reject"',
    ],
  });
});
after(async () => {
  await dns.stop();
});

function config(enforce: boolean): Config {
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  cfg.smtp.hostname = HOST;
  cfg.relay.networks = [];
  cfg.dns.servers = [dns.server];
  cfg.dns.timeoutMs = 1000;
  cfg.dns.tries = 1;
  cfg.spf.enabled = true;
  cfg.spf.header = 'authentication-results';
  cfg.dkim.enabled = true;
  cfg.dmarc.enabled = true;
  cfg.dmarc.enforce = enforce;
  return cfg;
}

async function signed(message: string): Promise<string> {
  // mailauth's typings want the signing keys at the top level; its code reads them from signatureData.
  const res = await dkimSign(message, { signatureData: [{ signingDomain: 'signed.test', selector: 'sel1', privateKey: KEY_PEM, canonicalization: 'relaxed/relaxed' }] } as unknown as Parameters<typeof dkimSign>[1]);
  assert.deepEqual(res.errors, []);
  return res.signatures + message;
}

function message(from: string, subject: string, body = 'hello\r\n'): string {
  return `From: <${from}>\r\nTo: <alice@example.test>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@signed.test>\r\n\r\n${body}`;
}

/** Dot-stuffs and sends one message in the open session; the reply to the final dot. */
async function send(c: Awaited<ReturnType<typeof smtpConnect>>, mailFrom: string, content: string): Promise<string> {
  assert.match(await c.send(`MAIL FROM:<${mailFrom}>`), /^250 /);
  assert.match(await c.send('RCPT TO:<alice@example.test>'), /^250 /);
  assert.match(await c.send('DATA'), /^354 /);
  const stuffed = content.replace(/\r\n$/, '').replace(/^\./gm, '..');
  return c.send(`${stuffed}\r\n.`);
}

async function stored(spoolDir: string): Promise<Map<string, string>> {
  const bySubject = new Map<string, string>();
  for await (const entry of scanSpool(spoolDir)) {
    const m = await readMessage(spoolDir, entry.envelope.queueId, entry.location);
    if (m === null) continue;
    const text = m.content.toString('latin1');
    bySubject.set(/\r\nSubject: ([^\r]*)/.exec(text)?.[1] ?? '', text);
  }
  return bySubject;
}

/** The unfolded Authentication-Results fields of a stored message's header section. */
function authResults(text: string): string[] {
  const head = text.slice(0, text.indexOf('\r\n\r\n')).replace(/\r\n(?=[ \t])/g, '');
  return head.split('\r\n').filter((l) => /^Authentication-Results:/i.test(l));
}

test('authentication results: pass, tampered body, DMARC fail reported, forged field renamed; all in one session', async (t) => {
  const cfg = config(false);
  const server = await startTestServer(cfg, { policy: buildPipeline(cfg, pino({ level: 'silent' }))! });
  t.after(() => server.stop());
  const c = await smtpConnect(server.port);
  assert.match(await c.send('EHLO client.signed.test'), /^250 /m);
  assert.match(await send(c, 'a@signed.test', await signed(message('a@signed.test', 'one'))), /^250 /);
  const tampered = (await signed(message('a@signed.test', 'two'))).replace('hello\r\n', 'hellO\r\n');
  assert.match(await send(c, 'a@signed.test', tampered), /^250 /);
  assert.match(await send(c, 'a@other.test', message('a@strict.test', 'three')), /^250 /, 'enforce = false: accepted');
  const forged = `Authentication-Results: ${HOST}; dkim=pass header.i=@bank.test; dmarc=pass header.from=bank.test\r\n` + (await signed(message('a@signed.test', 'four')));
  assert.match(await send(c, 'a@signed.test', forged), /^250 /);
  await c.send('QUIT');
  c.close();

  const all = await stored(server.spoolDir);
  assert.equal(all.size, 4, 'every message stored');
  const one = authResults(all.get('one')!);
  assert.equal(one.length, 1, `one field: ${one.join('\n')}`);
  assert.match(one[0], new RegExp(`^Authentication-Results: ${HOST.replace(/\./g, '\\.')}; spf=pass smtp\\.mailfrom=signed\\.test; `));
  assert.match(one[0], /; dkim=pass header\.i=@signed\.test header\.s=sel1 /);
  assert.match(one[0], /; dmarc=pass \(p=REJECT arc=none\) header\.from=signed\.test/);
  const two = authResults(all.get('two')!);
  assert.equal(two.length, 1);
  assert.match(two[0], /; dkim=fail \(body hash did not verify\)/);
  assert.match(two[0], /; dmarc=pass /, 'SPF is aligned: DMARC passes without DKIM');
  const three = authResults(all.get('three')!);
  assert.equal(three.length, 1);
  assert.match(three[0], /; spf=pass smtp\.mailfrom=other\.test; dkim=none \(message not signed\); dmarc=fail \(p=REJECT arc=none\) header\.from=strict\.test/);
  const four = all.get('four')!;
  assert.equal(authResults(four).length, 1, 'the forged field is not an Authentication-Results field any more');
  assert.match(authResults(four)[0], /; dkim=pass header\.i=@signed\.test /);
  assert.match(four, /\r\nX-Original-Authentication-Results: mx\.example\.test; dkim=pass header\.i=@bank\.test/);
});

test('authentication results: dmarc.enforce refuses a fail under p=reject with 550 5.7.1; the session goes on', async (t) => {
  const cfg = config(true);
  const server = await startTestServer(cfg, { policy: buildPipeline(cfg, pino({ level: 'silent' }))! });
  t.after(() => server.stop());
  const c = await smtpConnect(server.port);
  assert.match(await c.send('EHLO client.signed.test'), /^250 /m);
  assert.equal(await send(c, 'a@other.test', message('a@strict.test', 'refused')), '550 5.7.1 Message refused: it fails the DMARC policy of its From domain');
  assert.match(await send(c, 'a@signed.test', await signed(message('a@signed.test', 'passes'))), /^250 /);
  // Signed by signed.test, but From strict.test: not aligned, refused.
  assert.match(await send(c, 'a@signed.test', await signed(message('a@strict.test', 'unaligned'))), /^550 5\.7\.1 /);
  await c.send('QUIT');
  c.close();
  const all = await stored(server.spoolDir);
  assert.deepEqual([...all.keys()], ['passes']);
  assert.match(authResults(all.get('passes')!)[0], /dmarc=pass/);
});

test('authentication results: pipelined BDAT messages in one session, one of them in its body file, each verified', async (t) => {
  const cfg = config(true);
  cfg.smtp.bodyMemoryBytes = 65_536;
  const server = await startTestServer(cfg, { policy: buildPipeline(cfg, pino({ level: 'silent' }))! });
  t.after(() => server.stop());
  const big = await signed(message('a@signed.test', 'big', `${'0123456789abcdef'.repeat(8)}\r\n`.repeat(2000)));
  const small = await signed(message('a@signed.test', 'small'));
  const again = await signed(message('a@signed.test', 'again'));
  const refused = message('a@strict.test', 'refused');
  const c = await SmtpClient.connect(server.port);
  t.after(() => c.close());
  assert.equal((await c.reply())?.code, 220);
  assert.equal((await c.command('EHLO client.signed.test'))?.code, 250);
  const txn = (content: string): string => `MAIL FROM:<a@signed.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT ${Buffer.byteLength(content)} LAST\r\n${content}`;
  c.write(txn(small) + txn(big) + txn(refused) + txn(again));
  const codes: number[] = [];
  for (let i = 0; i < 12; i++) codes.push((await c.reply())?.code ?? 0);
  assert.deepEqual(codes, [250, 250, 250, 250, 250, 250, 250, 250, 550, 250, 250, 250]);
  const all = await stored(server.spoolDir);
  assert.deepEqual([...all.keys()].sort(), ['again', 'big', 'small']);
  for (const subject of ['again', 'big', 'small']) {
    const fields = authResults(all.get(subject)!);
    assert.equal(fields.length, 1, subject);
    assert.match(fields[0], /; dkim=pass header\.i=@signed\.test .*; dmarc=pass /, subject);
  }
  assert.ok(all.get('big')!.length > 200_000, 'the big one went past body_memory_bytes');
});
