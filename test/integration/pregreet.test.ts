// The pregreet test over real sockets ([pregreet]): a client that talks during the 220- pause is
// refused (554 5.5.1), logged and counted, and its network remembered in the state store as a
// verdict record (so `portcullis verdicts list` shows it): its next connection is refused at once.
// A client that waits gets the final 220 line, completes a transaction, and is not paused again.
// An allow-listed client is never paused.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultConfig } from '../../src/config/types.ts';
import { pregreetMemory } from '../../src/defense/pregreet.ts';
import pino from 'pino';
import { parseConfig } from '../../src/config/load.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { listVerdicts, verdictStoreKey, type StoredVerdict } from '../../src/policy/verdict-memory.ts';
import { openStateStore } from '../../src/store/open.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import type { StateStore } from '../../src/store/store.ts';
import { startDnsServer, type DnsTestServer } from '../helpers/dns-server.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

type LogLine = Record<string, unknown> & { msg: string };

/** Reads from a raw connection until `until` matches what arrived or it closes (bounded). */
async function readUntil(s: net.Socket, got: { text: string }, until: RegExp, timeoutMs = 8000): Promise<void> {
  for (let waited = 0; waited < timeoutMs && !until.test(got.text) && !s.destroyed; waited += 10) await sleep(10);
}

function rawConnect(port: number, localAddress: string): Promise<{ s: net.Socket; got: { text: string }; closed: Promise<void> }> {
  const s = net.connect({ host: '127.0.0.1', port, localAddress });
  const got = { text: '' };
  s.setEncoding('latin1');
  s.on('data', (d: string) => (got.text += d));
  s.on('error', () => {});
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  return new Promise((resolve) => s.once('connect', () => resolve({ s, got, closed })));
}

describe('pregreet', () => {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.startsWith('{')) lines.push(JSON.parse(l) as LogLine);
      done();
    },
  });
  let server: TestServer;
  let store: StateStore;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-pregreet-'));
    store = await openStateStore('sqlite', { dir });
    const config = defaultConfig();
    config.tls.enabled = false;
    config.access.allow = ['127.0.0.3/32'];
    // Each test address its own network, so one test's client is not another's.
    config.verdicts.ipv4Prefix = 32;
    config.pregreet = { enabled: true, waitSeconds: 1, action: 'reject', passTtlSeconds: 3600, rememberSeconds: 3600 };
    server = await startTestServer(config, {
      logStream: stream,
      logLevel: 'info',
      pregreetMemory: pregreetMemory(store, { rememberSeconds: 3600, passTtlSeconds: 3600, ipv4Prefix: 32, ipv6Prefix: 128 }),
    });
  });
  after(async () => {
    await server.stop();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('an early talker is refused with 554 5.5.1 and remembered: its next connection is refused at once', async () => {
    const c = await rawConnect(server.port, '127.0.0.51');
    await readUntil(c.s, c.got, /^220-/);
    assert.match(c.got.text, /^220-localhost ESMTP Portcullis\r\n$/);
    c.s.write('EHLO bot.example\r\n');
    await readUntil(c.s, c.got, /554/);
    // The greeting under way is ended first (RFC 5321 4.2.1), then the 554 answers the early EHLO.
    assert.deepEqual(wellFormedReplies(c.got.text).map((r) => r.code), [220, 554]);
    assert.match(c.got.text, /^220-localhost ESMTP Portcullis\r\n220 localhost ESMTP Portcullis\r\n554 5\.5\.1 [^\r\n]*\r\n$/);
    await Promise.race([c.closed, sleep(5000)]);
    assert.ok(c.s.destroyed || c.s.readableEnded, 'closed');
    c.s.destroy();
    const fired = lines.filter((l) => l.msg === 'defense: pregreet');
    assert.equal(fired.at(-1)?.client, '127.0.0.51');
    assert.equal(fired.at(-1)?.value, 'talked first');
    // Remembered as a verdict record: `portcullis verdicts list` shows it.
    let remembered: Awaited<ReturnType<typeof listVerdicts>> = [];
    for (let i = 0; i < 100 && remembered.length === 0; i++) {
      remembered = (await listVerdicts(store, null)).filter((v) => v.check === 'pregreet');
      if (remembered.length === 0) await sleep(20);
    }
    assert.equal(remembered[0]?.network, '127.0.0.51/32');
    // The next connection: refused at once, no pause.
    const again = await rawConnect(server.port, '127.0.0.51');
    await readUntil(again.s, again.got, /\r\n/);
    again.s.destroy();
    assert.match(again.got.text, /^554 5\.5\.1 /);
    assert.equal(lines.filter((l) => l.msg === 'defense: pregreet').at(-1)?.value, 'remembered');
  });

  test('a patient client gets the final 220, completes a transaction, and is not paused again', async () => {
    const c = await SmtpClient.connect(server.port, { localAddress: '127.0.0.52' });
    try {
      const greeting = await c.reply();
      assert.equal(greeting?.code, 220);
      assert.equal(greeting?.lines.length, 2, `a two-line greeting: ${greeting?.text}`);
      await c.expect('EHLO client.example\r\n', 250);
      await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
      await c.expect('RCPT TO:<alice@localhost>\r\n', 250);
      await c.expect('DATA\r\n', 354);
      await c.expect('Subject: t\r\n\r\nhello\r\n.\r\n', 250);
      await c.expect('QUIT\r\n', 221);
    } finally {
      c.close();
    }
    // Passed: the next connection's greeting is one line, at once.
    let lineCount = 0;
    for (let i = 0; i < 50 && lineCount !== 1; i++) {
      const next = await SmtpClient.connect(server.port, { localAddress: '127.0.0.52' });
      lineCount = (await next.reply())?.lines.length ?? 0;
      next.close();
      if (lineCount !== 1) await sleep(20);
    }
    assert.equal(lineCount, 1);
  });

  test('the pause is on the timer wheel: paused connections hold no Node timer each', async () => {
    const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const paused = await Promise.all(['127.0.0.53', '127.0.0.54', '127.0.0.55', '127.0.0.56', '127.0.0.57', '127.0.0.58'].map((a) => rawConnect(server.port, a)));
    try {
      for (const c of paused) await readUntil(c.s, c.got, /^220-/);
      assert.ok(paused.every((c) => /^220-[^\r\n]*\r\n$/.test(c.got.text)), 'all six are in the pause');
      // The test's own sleeps are over here; a timer per paused connection would add six.
      assert.ok(timers() - before < 3, `Node timers grew from ${before} to ${timers()} with six paused connections`);
      for (const c of paused) await readUntil(c.s, c.got, /^220 /m);
      assert.ok(paused.every((c) => /^220-[^\r\n]*\r\n220 [^\r\n]*\r\n$/.test(c.got.text)), 'each gets its final 220 after the pause');
    } finally {
      for (const c of paused) c.s.destroy();
    }
  });

  test('an allow-listed client is never paused', async () => {
    const c = await SmtpClient.connect(server.port, { localAddress: '127.0.0.3' });
    const greeting = await c.reply();
    c.close();
    assert.equal(greeting?.code, 220);
    assert.equal(greeting?.lines.length, 1);
  });
});

/**
 * Every reply in `text` as RFC 5321 4.2.1 has it: lines of `code-` then one `code ` line, one code
 * throughout. Throws on a line that is not a reply line, or a code that changes mid-reply.
 */
function wellFormedReplies(text: string): { code: number; lines: string[] }[] {
  assert.ok(text === '' || text.endsWith('\r\n'), `ends in CRLF: ${JSON.stringify(text)}`);
  const replies: { code: number; lines: string[] }[] = [];
  let open: { code: number; lines: string[] } | null = null;
  for (const line of text.split('\r\n').slice(0, -1)) {
    const m = /^([2-5]\d\d)([ -])/.exec(line);
    assert.ok(m !== null, `a reply line: ${JSON.stringify(line)}`);
    const code = Number(m[1]);
    if (open !== null) assert.equal(code, open.code, `one code throughout a multi-line reply: ${JSON.stringify(text)}`);
    open ??= { code, lines: [] };
    open.lines.push(line);
    if (m[2] === ' ') {
      replies.push(open);
      open = null;
    }
  }
  assert.equal(open, null, 'no reply left open');
  return replies;
}

describe('pregreet, then a connect-stage refusal', () => {
  let dns: DnsTestServer;
  let server: TestServer;
  let store: SqliteStore;
  let dir: string;
  before(async () => {
    // 127.0.0.71 is on the list; 127.0.0.72 and .74 are remembered as refused; 127.0.0.73 is neither.
    dns = await startDnsServer({ zones: ['zen.test'], records: ['host-record=71.0.0.127.zen.test,127.0.0.2'] });
    dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-pregreet-refused-'));
    const config = parseConfig([
      '[tls]', 'enabled = false',
      '[relay]', 'networks = []',
      '[access]', 'allow = []',
      '[limits]', 'refused_session_seconds = 60', 'refused_session_commands = 4', 'max_refused_sessions = 1',
      '[verdicts]', 'ipv4_prefix = 32',
      '[pregreet]', 'enabled = true', 'wait_seconds = 1',
      '[policy]', 'checks = ["dnsbl"]',
      '[dns]', `servers = ["${dns.server}"]`, 'timeout_ms = 1000', 'tries = 1',
      '[[dnsbl]]', 'zone = "zen.test"',
      '[dnslists]', 'stage = "connect"',
      '',
    ].join('\n'), 'pregreet.test');
    store = new SqliteStore(path.join(dir, 'state.sqlite'));
    const remembered: StoredVerdict = { action: 'reject', reply: { code: 554, enhanced: '5.7.1', lines: ['Service unavailable; client [127.0.0.72] blocked using zen.test'] }, reason: 'listed', at: Date.now() };
    await store.set(verdictStoreKey('dnsbl', 'connect', '127.0.0.72/32', ''), JSON.stringify(remembered), 3600);
    await store.set(verdictStoreKey('dnsbl', 'connect', '127.0.0.74/32', ''), JSON.stringify(remembered), 3600);
    const pipeline = buildPipeline(config, pino({ level: 'silent' }), store);
    assert.ok(pipeline !== null);
    server = await startTestServer(config, { policy: pipeline, pregreetMemory: pregreetMemory(store, { rememberSeconds: 3600, passTtlSeconds: 3600, ipv4Prefix: 32, ipv6Prefix: 128 }) });
  });
  after(async () => {
    await server?.stop();
    await store?.close();
    await dns?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const from of ['127.0.0.71', '127.0.0.72']) {
    test(`${from}: the greeting ends with a final 220 line, then every command but QUIT gets the refusal (554 5.7.1)`, async () => {
      const c = await rawConnect(server.port, from);
      try {
        await readUntil(c.s, c.got, /^220 .*\r\n/m);
        assert.deepEqual(wellFormedReplies(c.got.text).map((r) => [r.code, r.lines.length]), [[220, 2]], 'a whole two-line greeting');
        const before = c.got.text.length;
        c.s.write('EHLO client.example\r\n');
        await readUntil(c.s, c.got, /\r\n$/);
        c.s.write('MAIL FROM:<a@client.example>\r\n');
        for (let i = 0; i < 800 && wellFormedReplies(c.got.text.slice(before)).length < 2 && !c.s.destroyed; i++) await sleep(10);
        c.s.write('QUIT\r\n');
        await Promise.race([c.closed, sleep(5000)]);
        const replies = wellFormedReplies(c.got.text);
        assert.deepEqual(replies.map((r) => r.code), [220, 554, 554, 221], JSON.stringify(c.got.text));
        assert.match(replies[1]!.lines[0]!, new RegExp(`^554 5\\.7\\.1 Service unavailable; client \\[${from.replaceAll('.', '\\.')}\\] blocked using zen\\.test$`));
      } finally {
        c.s.destroy();
      }
    });
  }

  test('past max_refused_sessions the refused client gets the final 220, then 421 4.7.0, and is closed', async () => {
    // 127.0.0.71 passed the pause above: its refusal now replaces the greeting, and it holds the cap (1).
    const held = await rawConnect(server.port, '127.0.0.71');
    try {
      await readUntil(held.s, held.got, /^554 .*\r\n/m);
      assert.match(held.got.text, /^554 5\.7\.1 /);
      const over = await rawConnect(server.port, '127.0.0.74');
      await readUntil(over.s, over.got, /^421 .*\r\n/m);
      await Promise.race([over.closed, sleep(5000)]);
      assert.ok(over.s.destroyed || over.s.readableEnded, 'closed without waiting for a command');
      over.s.destroy();
      assert.deepEqual(wellFormedReplies(over.got.text).map((r) => r.code), [220, 421], JSON.stringify(over.got.text));
      assert.match(over.got.text, /\r\n421 4\.7\.0 [^\r\n]*\r\n$/);
    } finally {
      held.s.destroy();
    }
  });

  test('a client on no list passes the pause and is greeted as usual', async () => {
    const c = await SmtpClient.connect(server.port, { localAddress: '127.0.0.73' });
    try {
      const greeting = await c.reply();
      assert.equal(greeting?.code, 220);
      await c.expect('EHLO client.example\r\n', 250);
      await c.expect('QUIT\r\n', 221);
    } finally {
      c.close();
    }
  });
});
