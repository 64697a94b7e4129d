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
import { listVerdicts } from '../../src/policy/verdict-memory.ts';
import { openStateStore } from '../../src/store/open.ts';
import type { StateStore } from '../../src/store/store.ts';
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
    assert.match(c.got.text, /\r\n554 5\.5\.1 /);
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

  test('an allow-listed client is never paused', async () => {
    const c = await SmtpClient.connect(server.port, { localAddress: '127.0.0.3' });
    const greeting = await c.reply();
    c.close();
    assert.equal(greeting?.code, 220);
    assert.equal(greeting?.lines.length, 1);
  });
});
