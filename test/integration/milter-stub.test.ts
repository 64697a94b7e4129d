// The milter check over real sockets on both sides: SMTP clients to Portcullis, Portcullis to a
// stub filter (test/helpers/stub-milter.ts) scripted per test. Every modification applied to the
// stored message; the command sequence, macros, ABORT between transactions, QUIT at the end and
// one filter connection per session; replies at each stage; no-reply negotiation; body chunks;
// and the failures: a hang cut by the timeout, garbage, a close mid-message, a filter that is
// down, and on_failure = "accept".

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { defaultConfig, type Config } from '../../src/config/types.ts';
import type { MilterConfig } from '../../src/policy/checks/milter/config.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { freePort } from '../helpers/ports.ts';
import { startTestServer } from '../helpers/server.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';
import { macros, optneg, pkt, replying, startStubMilter, strings, u32, type StubMilter, type StubScript } from '../helpers/stub-milter.ts';

type Stored = { content: string; recipients: string[]; sender: string; quarantine?: string };

async function stored(spoolDir: string): Promise<Map<string, Stored>> {
  const out = new Map<string, Stored>();
  for await (const e of scanSpool(spoolDir)) {
    const m = await readMessage(spoolDir, e.envelope.queueId, e.location);
    assert.ok(m !== null);
    out.set(e.envelope.queueId, {
      content: m.content.toString('latin1'),
      recipients: e.envelope.recipients.map((r) => r.address),
      sender: e.envelope.reversePath,
      ...(e.envelope.quarantine !== undefined ? { quarantine: e.envelope.quarantine } : {}),
    });
  }
  return out;
}

function queueIdOf(text: string): string {
  const m = /queued as (\S+)/.exec(text);
  assert.ok(m, text);
  return m[1];
}

async function start(t: { after: (fn: () => Promise<void> | void) => void }, milters: Partial<MilterConfig>[], ports: number[], tune: (c: Config) => void = () => undefined, logLines: string[] | null = null) {
  const config: Config = defaultConfig();
  tune(config);
  config.domains.local = ['example.test'];
  config.smtp.hostname = 'mx.example.test';
  config.verdicts.maxRefusalsPerSession = 20;
  config.milter = milters.map((m, i) => ({
    address: { kind: 'tcp' as const, host: '127.0.0.1', port: ports[i] },
    onFailure: 'tempfail',
    connectTimeoutSeconds: 2,
    commandTimeoutSeconds: 2,
    ...m,
  }));
  const log = logLines === null ? pino({ level: 'silent' }) : pino({ level: 'warn' }, { write: (line: string) => void logLines.push(line) });
  const pipeline = buildPipeline(config, log);
  assert.ok(pipeline !== null);
  const server = await startTestServer(config, { policy: pipeline });
  t.after(server.stop);
  return server;
}

async function session(port: number): Promise<SmtpClient> {
  const c = await SmtpClient.connect(port);
  await c.expect('', 220, 'greeting');
  await c.expect('EHLO client.example\r\n', 250);
  return c;
}

async function send(c: SmtpClient, rcpts: string[], message: string, finalCode: number, from = 'a@client.example'): Promise<string> {
  await c.expect(`MAIL FROM:<${from}>\r\n`, 250);
  for (const r of rcpts) await c.expect(`RCPT TO:<${r}>\r\n`, 250);
  await c.expect('DATA\r\n', 354);
  return (await c.expect(`${message}.\r\n`, finalCode)).text;
}

const MESSAGE = 'Subject: Hi\r\nX-Drop-Me: yes\r\nFrom: a@client.example\r\n\r\nHello.\r\n';

async function stub(t: { after: (fn: () => Promise<void>) => void }, script: StubScript): Promise<StubMilter> {
  const s = await startStubMilter(script);
  t.after(s.stop);
  return s;
}

async function until(what: string, fn: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test('milter modifications: every SMFIR_* modification lands in the stored message, through the one edit step', async (t) => {
  const milter = await stub(
    t,
    replying(0, 0x1ff, (c) =>
      c.cmd === 'E'
        ? [
            pkt('h', 'X-Stub\0appended\0'),
            pkt('i', Buffer.concat([u32(0), Buffer.from('X-Top\0first\0')])),
            pkt('i', Buffer.concat([u32(1), Buffer.from('DKIM-Like\0v=1; a=x;\n\tb=folded\0')])),
            pkt('m', Buffer.concat([u32(1), Buffer.from('Subject\0[filtered] Hi\0')])),
            pkt('m', Buffer.concat([u32(1), Buffer.from('X-Drop-Me\0\0')])),
            pkt('e', '<new@example.test>\0'),
            pkt('+', '<added@example.test>\0'),
            pkt('2', '<added2@example.test>\0NOTIFY=NEVER\0'),
            pkt('-', '<drop@example.test>\0'),
            pkt('q', 'held for review\0'),
            pkt('b', 'Replaced body\nbare LF'),
            pkt('a'),
          ]
        : undefined,
    ),
  );
  const server = await start(t, [{}], [milter.port]);
  const c = await session(server.port);
  const id = queueIdOf(await send(c, ['alice@example.test', 'drop@example.test'], MESSAGE, 250));
  await c.expect('QUIT\r\n', 221);
  c.close();
  const m = (await stored(server.spoolDir)).get(id);
  assert.ok(m !== undefined);
  assert.match(m.content, /^X-Top: first\r\nDKIM-Like: v=1; a=x;\r\n\tb=folded\r\nReceived: from client\.example/, 'inserted at their indexes, the filter\'s folding kept (CRLF)');
  assert.match(m.content, /\r\nSubject: \[filtered\] Hi\r\n/);
  assert.doesNotMatch(m.content, /X-Drop-Me/);
  assert.match(m.content, /From: a@client\.example\r\nX-Stub: appended\r\n\r\nReplaced body\r\nbare LF\r\n$/, 'appended below the last field; the body replaced and made canonical');
  assert.deepEqual(m.recipients, ['alice@example.test', 'added@example.test', 'added2@example.test']);
  assert.equal(m.sender, 'new@example.test');
  assert.equal(m.quarantine, 'held for review');
});

test('milter conversation: the sequence and macros Postfix sends, one connection per session, ABORT between transactions, QUIT at the end', async (t) => {
  const milter = await stub(t, replying(0, 0x1ff));
  const server = await start(t, [{}], [milter.port]);
  const c = await session(server.port);
  const first = queueIdOf(await send(c, ['alice@example.test'], MESSAGE, 250));
  // A transaction that never reaches its end: RSET, then a new one.
  await c.expect('MAIL FROM:<b@client.example>\r\n', 250);
  await c.expect('RSET\r\n', 250);
  const second = queueIdOf(await send(c, ['bob@example.test'], MESSAGE, 250));
  await c.expect('QUIT\r\n', 221);
  c.close();
  await until('the filter connection to close', () => milter.closed() === 1);
  assert.equal(milter.connections.length, 1, 'one filter connection for the whole session');
  const seen = milter.connections[0];
  const cmds = seen.map((x) => (x.cmd === 'D' ? `D${String.fromCharCode(x.data[0])}` : x.cmd)).join(' ');
  assert.equal(
    cmds,
    'O DC C DH H DM M DR R DT T L L L L DN N B DE E DM M A DM M DR R DT T L L L L DN N B DE E Q',
    'EOB ends the first transaction (no ABORT); the abandoned one is aborted before the next MAIL',
  );
  const connectMacros = macros(seen[1].data).values;
  assert.equal(connectMacros.get('j'), 'mx.example.test');
  assert.equal(connectMacros.get('{daemon_name}'), 'portcullis');
  assert.equal(connectMacros.get('{client_addr}'), '127.0.0.1');
  assert.equal(connectMacros.get('{client_name}'), 'unknown');
  assert.ok(/^\d+$/.test(connectMacros.get('{client_port}') ?? ''));
  assert.equal(connectMacros.get('_'), 'unknown [127.0.0.1]');
  const connect = seen[2].data;
  assert.equal(connect.toString('latin1', 0, connect.indexOf(0)), '[127.0.0.1]');
  assert.equal(String.fromCharCode(connect[connect.indexOf(0) + 1]), '4');
  assert.deepEqual(strings(seen[4].data), ['client.example']);
  const mailMacros = macros(seen[5].data).values;
  assert.equal(mailMacros.get('i'), first, 'macro i is the queue id the message is stored under');
  assert.equal(mailMacros.get('{mail_addr}'), 'a@client.example');
  assert.deepEqual(strings(seen[6].data), ['<a@client.example>']);
  assert.equal(macros(seen[7].data).values.get('{rcpt_addr}'), 'alice@example.test');
  assert.deepEqual(strings(seen[8].data), ['<alice@example.test>']);
  // Our Received first, then the message's fields; values without the space after the colon.
  const headers = seen.filter((x) => x.cmd === 'L').slice(0, 4).map((x) => strings(x.data));
  assert.equal(headers[0][0], 'Received');
  assert.deepEqual(headers.slice(1), [['Subject', 'Hi'], ['X-Drop-Me', 'yes'], ['From', 'a@client.example']]);
  assert.match(headers[0][1], /^from client\.example \(\[127\.0\.0\.1\]\)\n\tby mx\.example\.test/, 'folds sent as LF + white space');
  assert.equal(seen.find((x) => x.cmd === 'B')?.data.toString(), 'Hello.\r\n');
  const lastMail = seen.findLast((x) => x.cmd === 'D' && x.data[0] === 0x4d)!;
  assert.equal(macros(lastMail.data).values.get('i'), second);
});

test('milter replies: reject at RCPT refuses that recipient only; tempfail at MAIL; a multi-line reply code at EOB; discard; a 2xx reply code is a failure', async (t) => {
  const milter = await stub(
    t,
    replying(0, 0x1ff, (c) => {
      const s = c.cmd === 'R' || c.cmd === 'M' ? strings(c.data)[0] : '';
      if (c.cmd === 'R' && s === '<bad@example.test>') return [pkt('r')];
      if (c.cmd === 'R' && s === '<custom@example.test>') return [pkt('y', '550 5.1.1 No such user here\0')];
      if (c.cmd === 'M' && s === '<later@client.example>') return [pkt('t')];
      if (c.cmd === 'M' && s === '<evil@client.example>') return [pkt('y', '250 2.0.0 fine\r\n550 bad\0')];
      if (c.cmd === 'L' && strings(c.data)[0] === 'Subject') {
        const subject = strings(c.data)[1];
        if (subject === 'drop') return [pkt('d')];
      }
      if (c.cmd === 'E') {
        return [pkt('y', '554-5.7.1 Spam detected\r\n554 5.7.1 see http://example.test/why\0')];
      }
      return undefined;
    }),
  );
  const server = await start(t, [{}], [milter.port]);
  const c = await session(server.port);
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  assert.equal((await c.expect('RCPT TO:<bad@example.test>\r\n', 550)).text, '550 5.7.1 Rejected by a content filter');
  assert.equal((await c.expect('RCPT TO:<custom@example.test>\r\n', 550)).text, '550 5.1.1 No such user here');
  await c.expect('RCPT TO:<alice@example.test>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  const spam = await c.expect(`${MESSAGE}.\r\n`, 554);
  assert.deepEqual(spam.lines, ['554-5.7.1 Spam detected', '554 5.7.1 see http://example.test/why']);
  assert.equal((await c.expect('MAIL FROM:<later@client.example>\r\n', 451)).text, '451 4.7.1 Temporarily refused by a content filter, try again later');
  // Discard at a header: 250, nothing stored.
  assert.equal(await send(c, ['alice@example.test'], 'Subject: drop\r\n\r\nx\r\n', 250), '250 2.0.0 Ok: message discarded');
  // A filter that tries to accept through a reply code has broken the protocol: on_failure.
  assert.equal((await c.expect('MAIL FROM:<evil@client.example>\r\n', 451)).text, '451 4.7.1 Content filter unavailable, try again later');
  await c.expect('QUIT\r\n', 221);
  c.close();
  assert.equal((await stored(server.spoolDir)).size, 0);
});

test('milter negotiation: a filter with every no-reply bit (rspamd\'s answer) and SMFIP_NOHELO gets no waits it never answers, and big bodies go in 65,535-octet chunks', async (t) => {
  const NR_ALL = 0xff080;
  const milter = await stub(t, (c) => {
    if (c.cmd === 'O') return [optneg(0x1ff, NR_ALL | 0x2)];
    if (c.cmd === 'E') return [pkt('p'), pkt('h', 'X-Seen\0yes\0'), pkt('p'), pkt('c')];
    return [];
  });
  const server = await start(t, [{}], [milter.port]);
  const c = await session(server.port);
  const line = `${'x'.repeat(998)}\r\n`;
  const body = line.repeat(200);
  const id = queueIdOf(await send(c, ['alice@example.test'], `Subject: big\r\n\r\n${body}`, 250));
  await c.expect('QUIT\r\n', 221);
  c.close();
  const seen = milter.connections[0];
  assert.ok(!seen.some((x) => x.cmd === 'H'), 'SMFIP_NOHELO: no HELO sent');
  const chunks = seen.filter((x) => x.cmd === 'B').map((x) => x.data);
  assert.ok(chunks.length >= 4 && chunks.every((b) => b.length <= 65_535), `chunks: ${chunks.map((b) => b.length).join(',')}`);
  assert.equal(Buffer.concat(chunks).toString(), body);
  assert.match((await stored(server.spoolDir)).get(id)!.content, /X-Seen: yes\r\n\r\n/);
});

test('milter failures: a hang is cut by the command timeout, garbage and a close mid-message get on_failure (tempfail), nothing is stored; on_failure = "accept" passes', async (t) => {
  let mode = 'hang';
  const milter = await stub(t, (c) => {
    if (c.cmd === 'O') return [optneg(0x1ff, 0)];
    if (c.cmd === 'D' || c.cmd === 'A' || c.cmd === 'Q') return [];
    if (c.cmd === 'E' && mode === 'hang') return [];
    if (c.cmd === 'M' && mode === 'garbage') return [Buffer.from('\0\0\0\x05Zjunk')];
    if (c.cmd === 'B' && mode === 'close') return 'close';
    return [pkt('c')];
  });
  const logLines: string[] = [];
  const server = await start(t, [{ commandTimeoutSeconds: 1 }], [milter.port], () => undefined, logLines);
  for (const m of ['hang', 'garbage', 'close']) {
    mode = m;
    const c = await session(server.port);
    const started = Date.now();
    if (m === 'garbage') assert.equal((await c.expect('MAIL FROM:<a@client.example>\r\n', 451)).text, '451 4.7.1 Content filter unavailable, try again later');
    else assert.equal(await send(c, ['alice@example.test'], MESSAGE, 451), '451 4.7.1 Content filter unavailable, try again later');
    if (m === 'hang') assert.ok(Date.now() - started >= 900 && Date.now() - started < 5000, `cut by the 1 s timeout (${Date.now() - started} ms)`);
    // The session goes on: the dead filter keeps refusing its transactions for now.
    assert.equal((await c.expect('MAIL FROM:<a@client.example>\r\n', 451)).text, '451 4.7.1 Content filter unavailable, try again later');
    await c.expect('QUIT\r\n', 221);
    c.close();
  }
  assert.equal((await stored(server.spoolDir)).size, 0, 'nothing stored, nothing half-stored');
  const failures = logLines.map((l) => JSON.parse(l) as { msg: string; milter: string; reason: string }).filter((l) => l.msg === 'milter failed');
  assert.deepEqual(failures.map((l) => l.milter), [`127.0.0.1:${milter.port}`, `127.0.0.1:${milter.port}`, `127.0.0.1:${milter.port}`], 'one warning per session, naming the filter');
  assert.match(failures[0].reason, /^timeout: no response within 1000 ms/);
  assert.match(failures[1].reason, /^protocol: unknown response code 0x5a/);
  assert.match(failures[2].reason, /^closed: filter closed the connection/);

  // A filter that is down; then one that hangs with on_failure = "accept".
  const downPort = await freePort();
  const passing = await start(t, [{ onFailure: 'accept' }, { onFailure: 'accept', commandTimeoutSeconds: 1 }], [downPort, milter.port]);
  mode = 'hang';
  const c = await session(passing.port);
  const id = queueIdOf(await send(c, ['alice@example.test'], MESSAGE, 250));
  await c.expect('QUIT\r\n', 221);
  c.close();
  assert.match((await stored(passing.spoolDir)).get(id)!.content, /Subject: Hi\r\nX-Drop-Me: yes/, 'passed unfiltered');

  const refusing = await start(t, [{}], [downPort]);
  const d = await session(refusing.port);
  assert.equal((await d.expect('MAIL FROM:<a@client.example>\r\n', 451)).text, '451 4.7.1 Content filter unavailable, try again later');
  await d.expect('QUIT\r\n', 221);
  d.close();
});

test('milter chain: two filters in order, each seeing every message of the session; the first one\'s reject stops the chain', async (t) => {
  const order: string[] = [];
  const first = await stub(t, replying(0, 0x1ff, (c) => {
    if (c.cmd === 'E') {
      order.push('first');
      return [pkt('h', 'X-First\x001\0'), pkt('c')];
    }
    if (c.cmd === 'L' && strings(c.data)[1] === 'GTUBE') return [pkt('r')];
    return undefined;
  }));
  const second = await stub(t, replying(0, 0x1ff, (c) => {
    if (c.cmd === 'E') {
      order.push('second');
      return [pkt('h', 'X-Second\x002\0'), pkt('a')];
    }
    return undefined;
  }));
  const server = await start(t, [{}, {}], [first.port, second.port]);
  const c = await session(server.port);
  const a = queueIdOf(await send(c, ['alice@example.test'], MESSAGE, 250));
  await c.expect('RSET\r\n', 250);
  assert.equal(await send(c, ['alice@example.test'], 'Subject: GTUBE\r\n\r\nx\r\n', 550), '550 5.7.1 Rejected by a content filter');
  const b = queueIdOf(await send(c, ['alice@example.test'], MESSAGE, 250));
  await c.expect('QUIT\r\n', 221);
  c.close();
  assert.deepEqual(order, ['first', 'second', 'first', 'second']);
  const messages = await stored(server.spoolDir);
  for (const id of [a, b]) assert.match(messages.get(id)!.content, /X-First: 1\r\nX-Second: 2\r\n\r\n/);
  assert.equal(first.connections.length, 1);
  assert.equal(second.connections.length, 1);
  assert.ok(second.connections[0].some((x) => x.cmd === 'A'), 'the second filter had its message aborted when the first refused');
});

test('milter after STARTTLS and with a body in its body file: HELO again with the TLS macros; the body read from the file, replaced', async (t) => {
  const milter = await stub(t, replying(0, 0x1ff, (c) => (c.cmd === 'E' ? [pkt('b', 'short now\r\n'), pkt('c')] : undefined)));
  const server = await start(t, [{}], [milter.port], (c) => {
    c.smtp.bodyMemoryBytes = 2 ** 16;
  });
  const c = await session(server.port);
  await c.expect('STARTTLS\r\n', 220);
  await c.startTls();
  await c.expect('EHLO client.example\r\n', 250);
  const body = `${'y'.repeat(998)}\r\n`.repeat(300);
  const id = queueIdOf(await send(c, ['alice@example.test'], `Subject: spilled\r\n\r\n${body}`, 250));
  await c.expect('QUIT\r\n', 221);
  c.close();
  const seen = milter.connections[0];
  const helos = seen.filter((x) => x.cmd === 'H');
  assert.equal(helos.length, 2, 'HELO before and after STARTTLS');
  const tlsMacros = seen.filter((x) => x.cmd === 'D' && x.data[0] === 0x48).map((x) => macros(x.data).values);
  assert.equal(tlsMacros[0].get('{tls_version}'), undefined);
  assert.match(tlsMacros[1].get('{tls_version}') ?? '', /^TLSv1\.[23]$/);
  assert.ok((tlsMacros[1].get('{cipher}') ?? '') !== '');
  assert.equal(Buffer.concat(seen.filter((x) => x.cmd === 'B').map((x) => x.data)).toString(), body, 'the whole body, read back from its body file');
  assert.match((await stored(server.spoolDir)).get(id)!.content, /Subject: spilled\r\n\r\nshort now\r\n$/);
});

test('milter over a UNIX socket: every message of the session is filtered, pipelined and BDAT ones too; 8-bit header fields go as stored', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-milter-sock-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = path.join(dir, 'milter.sock');
  const subjects: Buffer[] = [];
  const milter = await startStubMilter(
    replying(0, 0x1ff, (c) => {
      if (c.cmd === 'L' && c.data.toString('latin1').startsWith('Subject\0')) subjects.push(c.data.subarray(8, c.data.length - 1));
      if (c.cmd === 'E') return [pkt('h', `X-Filtered\0${subjects.length}\0`), pkt('c')];
      return undefined;
    }),
    socketPath,
  );
  t.after(milter.stop);
  const server = await start(t, [{ address: { kind: 'unix', path: socketPath } }], [0]);
  const c = await session(server.port);
  const ids: string[] = [];
  ids.push(queueIdOf(await send(c, ['alice@example.test'], 'Subject: one\r\n\r\nx\r\n', 250)));
  c.write('MAIL FROM:<a@client.example> SMTPUTF8\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: caf\u00e9\r\n\r\nx\r\n.\r\n');
  assert.deepEqual([(await c.reply())?.code, (await c.reply())?.code, (await c.reply())?.code], [250, 250, 354]);
  ids.push(queueIdOf((await c.reply())!.text));
  const bdat = 'Subject: three\r\n\r\nx\r\n';
  c.write(`MAIL FROM:<a@client.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT ${bdat.length} LAST\r\n${bdat}`);
  assert.deepEqual([(await c.reply())?.code, (await c.reply())?.code], [250, 250]);
  ids.push(queueIdOf((await c.reply())!.text));
  await c.expect('QUIT\r\n', 221);
  c.close();
  assert.equal(milter.connections.length, 1);
  assert.deepEqual(subjects.map((b) => b.toString('hex')), [Buffer.from('one').toString('hex'), Buffer.from('caf\u00e9', 'utf8').toString('hex'), Buffer.from('three').toString('hex')]);
  const messages = await stored(server.spoolDir);
  ids.forEach((id, i) => assert.match(messages.get(id)!.content, new RegExp(`X-Filtered: ${i + 1}\r\n\r\nx\r\n$`)));
});

test('milter out of step: a response that answers no command is a protocol failure, never read as the next answer', async (t) => {
  // One write: two writes would reach us 40 ms apart (Nagle on the stub's socket), after RCPT went out.
  const milter = await stub(t, replying(0, 0x1ff, (c) => (c.cmd === 'M' ? [Buffer.concat([pkt('c'), pkt('c')])] : undefined)));
  const server = await start(t, [{}], [milter.port]);
  const c = await session(server.port);
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  assert.equal((await c.expect('RCPT TO:<alice@example.test>\r\n', 451)).text, '451 4.7.1 Content filter unavailable, try again later');
  await c.expect('QUIT\r\n', 221);
  c.close();
  assert.equal((await stored(server.spoolDir)).size, 0);
});

test('property: whatever complete packets a filter answers with, each message is stored with a 250 or refused with a 4xx/5xx, and the session goes on', { timeout: 120_000 }, async (t) => {
  const answerArb = fc.oneof(
    fc.constantFrom('a', 'c', 'd', 'r', 't', 'p', 's', 'f', '4', 'Z', '?').map((c) => [pkt(c)]),
    fc.constantFrom('550 5.7.1 no', '451 later', '250 ok', 'garbage', '554-5.7.1 a\r\n554 5.7.1 b').map((text) => [pkt('y', `${text}\0`)]),
    fc.constant([pkt('h', 'X-Fuzz\0v\0'), pkt('c')]),
    fc.constant([pkt('i', Buffer.concat([u32(7), Buffer.from('X-Ins\0v\0')])), pkt('a')]),
    fc.constant([pkt('m', Buffer.concat([u32(1), Buffer.from('Subject\0new\0')])), pkt('c')]),
    fc.constant([pkt('b', 'new body'), pkt('c')]),
    fc.constant([pkt('-', '<alice@example.test>\0'), pkt('c')]),
    fc.constant([pkt('q', 'fuzz\0'), pkt('c')]),
    fc.constant([Buffer.concat([pkt('c'), pkt('c')])]),
    fc.constant([pkt('O', Buffer.alloc(12))]),
  );
  let script: (readonly Buffer[])[] = [];
  let step = 0;
  const milter = await stub(t, (c) => {
    if (c.cmd === 'O') return [optneg(0x1ff, 0)];
    if (c.cmd === 'D' || c.cmd === 'A' || c.cmd === 'Q') return [];
    return [...script[step++ % script.length]];
  });
  const server = await start(t, [{ commandTimeoutSeconds: 2 }], [milter.port]);
  let queued = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(answerArb, { minLength: 1, maxLength: 12 }), async (answers) => {
      script = answers;
      step = 0;
      const c = await SmtpClient.connect(server.port);
      const say = async (line: string) => {
        c.write(line);
        return c.reply();
      };
      try {
        const greeting = await c.reply();
        // A filter's tempfail or reject at CONNECT: 421 (closed) or 554 (only QUIT is served).
        if (greeting?.code !== 220) {
          assert.ok(greeting?.code === 421 || greeting?.code === 554, JSON.stringify(greeting));
          return;
        }
        const codes: number[] = [];
        for (const line of ['EHLO client.example\r\n', 'MAIL FROM:<a@client.example>\r\n', 'RCPT TO:<alice@example.test>\r\n', 'DATA\r\n']) {
          const reply = await say(line);
          assert.ok(reply !== null, `${line}: connection closed`);
          codes.push(reply.code);
          if (reply.code >= 400) break;
        }
        if (codes.at(-1) === 354) {
          const end = await say(`${MESSAGE}.\r\n`);
          assert.ok(end !== null && (end.code === 250 || (end.code >= 400 && end.code < 600)), JSON.stringify(end));
          if (/queued as/.test(end.text)) queued++;
        }
        assert.ok(codes.every((code) => code === 250 || code === 354 || (code >= 400 && code < 600)), JSON.stringify(codes));
        // The session goes on after whatever the filter did.
        assert.equal((await c.expect('NOOP\r\n', 250)).code, 250);
        await c.expect('QUIT\r\n', 221);
      } finally {
        c.close();
      }
    }),
    { numRuns: 40 },
  );
  assert.equal((await stored(server.spoolDir)).size, queued, 'every 250 "queued" is a stored message, and nothing else is');
});
