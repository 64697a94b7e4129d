// The edge use case end to end, real processes only: a client hands mail to `portcullis serve`
// (workers and single process), which queues it and delivers it at once: to smtp-sink over SMTP
// (a fixed next hop), to Dovecot over LMTP, to a Maildir; a recipient the next hop refuses comes
// back to its sender as a DSN (parsed with a real MIME parser); the operator sees the queue with
// `portcullis queue`, and the spool is reclaimed once everything is done.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { simpleParser } from 'mailparser';
import { runCli, startCliServer, type CliServer } from '../helpers/cli-server.ts';
import { startDovecotLmtp, startSmtpSink } from '../helpers/mail-peers.ts';
import { smtpConnect } from '../helpers/smtp-client.ts';
import { startStubPeer } from '../helpers/stub-smtp-peer.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => T | undefined | false, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function send(port: number, from: string, to: string[], body: string): Promise<string> {
  const c = await smtpConnect(port);
  try {
    const ok = async (line: string, code: RegExp): Promise<string> => {
      const r = await c.send(line);
      assert.match(r, code, `${line.slice(0, 40)} -> ${r}`);
      return r;
    };
    await ok('EHLO client.example', /^250[ -]/);
    await ok(`MAIL FROM:<${from}>`, /^250 /);
    for (const r of to) await ok(`RCPT TO:<${r}>`, /^250 /);
    await ok('DATA', /^354 /);
    const reply = await ok(`${body.replace(/\n/g, '\r\n')}.\r\n`, /^250 /);
    await ok('QUIT', /^221 /);
    return /queued as (\S+)/.exec(reply)![1];
  } finally {
    c.close();
  }
}

function maildirFiles(root: string, address: string): string[] {
  const dir = path.join(root, address, 'new');
  return existsSync(dir) ? readdirSync(dir).map((f) => readFileSync(path.join(dir, f), 'utf8')) : [];
}

async function queueList(server: CliServer): Promise<string> {
  const r = await runCli(server.configPath, ['queue', 'list']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.toString();
}

for (const workers of [1, 2]) {
  test(`relay end to end (${workers} worker${workers === 1 ? '' : 's'}): SMTP next hop, LMTP, Maildir, a DSN, the queue, reclamation`, { timeout: 120_000 }, async (t) => {
    const sink = await startSmtpSink();
    t.after(() => sink.stop());
    const dovecot = await startDovecotLmtp(['alice']);
    t.after(() => dovecot.stop());
    // A next hop that refuses one recipient after the data would be a bounce; here it refuses at RCPT.
    const picky = await startStubPeer({ onCommand: (line) => (/^RCPT TO:<nobody@/i.test(line) ? '550 5.1.1 no such user' : undefined) });
    t.after(() => picky.stop());
    const maildirRoot = mkdtempSync(path.join(os.tmpdir(), 'portcullis-maildir-'));
    t.after(() => rmSync(maildirRoot, { recursive: true, force: true }));
    const maildir = path.join(maildirRoot, 'mail');
    const server = await startCliServer({
      workers,
      localDomains: ['example.test', 'lmtp.test', 'sender.test'],
      routes: [
          `default = "smtp:[127.0.0.1]:${sink.port}"`,
          `local = ${JSON.stringify(`maildir:${maildir}`)}`,
          `"lmtp.test" = "lmtp:127.0.0.1:${dovecot.port}"`,
          `"picky.test" = "smtp:[127.0.0.1]:${picky.port}"`,
      ],
    });
    t.after(() => server.cleanup());

    // Relayed (loopback may relay) to the fixed next hop; local to the Maildir; LMTP to Dovecot.
    const relayed = await send(server.port, 'bob@sender.test', ['carol@far.example'], 'Subject: out\n\nto the sink\n..leading dot\n');
    await until('the sink to get the relayed message', () => sink.dumps().find((d) => d.includes('to the sink')));
    const dump = sink.dumps().find((d) => d.includes('to the sink'))!;
    assert.match(dump, /\n\.leading dot\n/, 'dot-stuffing undone by the next hop: the stored line arrives as it was');
    await send(server.port, 'bob@sender.test', ['alice@example.test'], 'Subject: local\n\nto the maildir\n');
    const [local] = await until('the Maildir delivery', () => maildirFiles(maildir, 'alice@example.test').length > 0 && maildirFiles(maildir, 'alice@example.test'));
    assert.match(local, /^Return-Path: <bob@sender\.test>\nDelivered-To: alice@example\.test\n/);
    await send(server.port, 'bob@sender.test', ['alice@lmtp.test'], 'Subject: lmtp\n\nto dovecot\n');
    await until('the LMTP delivery', () => dovecot.delivered('alice').length > 0);

    // Refused by the next hop at RCPT (550): a failure DSN to the sender (local: its Maildir).
    const bounced = await send(server.port, 'bob@sender.test', ['nobody@picky.test'], 'Subject: doomed\nMessage-ID: <doomed@sender.test>\n\nnever arrives\n');
    const [dsnText] = await until('the DSN in the sender\'s Maildir', () => maildirFiles(maildir, 'bob@sender.test').length > 0 && maildirFiles(maildir, 'bob@sender.test'));
    assert.match(dsnText, /^Return-Path: <>\n/, 'a DSN comes from the null reverse-path');
    const dsn = await simpleParser(dsnText, { keepDeliveryStatus: true });
    assert.match(String(dsn.headers.get('content-type') && (dsn.headers.get('content-type') as { value: string }).value), /multipart\/report/);
    const status = dsn.attachments.find((a) => a.contentType === 'message/delivery-status');
    assert.ok(status !== undefined, 'a message/delivery-status part');
    const fields = status.content.toString();
    assert.match(fields, /Final-Recipient: rfc822; ?nobody@picky\.test/i);
    assert.match(fields, /Action: failed/i);
    assert.match(fields, /Status: 5\.1\.1/);
    assert.match(fields, /Diagnostic-Code: smtp; ?550 5\.1\.1 no such user/i);
    assert.ok(dsnText.includes(bounced), 'the DSN names the original queue id');

    // Everything delivered: the queue is empty.
    const deadline = Date.now() + 20_000;
    let listing = await queueList(server);
    while (listing !== 'queue is empty\n' && Date.now() < deadline) {
      await sleep(100);
      listing = await queueList(server);
    }
    assert.equal(listing, 'queue is empty\n');
    assert.ok(server.logText().includes(relayed));

    // A stop seals every segment; the next start finds them all done and reclaims them.
    const segments = (): string[] => readdirSync(path.join(server.spoolDir, 'segments'));
    const before = segments();
    assert.ok(before.length > 0);
    const r = await runCli(server.configPath, ['stop'], 60_000);
    assert.equal(r.code, 0, r.stderr);
    const again = await server.restart();
    t.after(() => again.cleanup());
    await until('the old segments reclaimed', () => before.every((f) => !segments().includes(f)));
    assert.deepEqual(readdirSync(path.join(server.spoolDir, 'messages')), []);
  });
}

test('a recipient the routing table would only bounce ("refuse") is refused at RCPT, in the session', { timeout: 60_000 }, async (t) => {
  const server = await startCliServer({ workers: 1, routes: ['default = "refuse"', '"nowhere.example" = "refuse"', 'local = "smtp:[127.0.0.1]:9"', '"open.example" = "smtp:[127.0.0.1]:9"'] });
  t.after(() => server.cleanup());
  const c = await smtpConnect(server.port);
  t.after(() => c.close());
  assert.match(await c.send('EHLO client.example'), /^250/);
  assert.match(await c.send('MAIL FROM:<bob@sender.test>'), /^250/);
  assert.equal(await c.send('RCPT TO:<carol@far.example>'), '550 5.4.4 Recipient address rejected: no route to this domain');
  assert.equal(await c.send('RCPT TO:<dave@nowhere.example>'), '550 5.4.4 Recipient address rejected: no route to this domain');
  assert.match(await c.send('RCPT TO:<erin@open.example>'), /^250/, 'a routed domain is relayed');
  assert.match(await c.send('RCPT TO:<alice@example.test>'), /^250/, 'a local domain is accepted');
  assert.match(await c.send('QUIT'), /^221/);
});
