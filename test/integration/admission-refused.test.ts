// 554 mode's cap (limits.max_refused_sessions) over real sockets, for clients refused by a
// connect-stage verdict and not by the block list: one remembered in the state store (written
// the way the pipeline writes it, verdictStoreKey) and one on a DNS list (a real dnsmasq on
// loopback). They share the cap with blocked clients: while one is held in 554 mode, the next
// refused client gets its 554 and is closed at once, without waiting for QUIT; once the held one
// is gone, a refused client is held again. A legitimate client is greeted throughout.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { parseConfig } from '../../src/config/load.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { verdictStoreKey, type StoredVerdict } from '../../src/policy/verdict-memory.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { startDnsServer, type DnsTestServer } from '../helpers/dns-server.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

type LogLine = Record<string, unknown> & { msg: string };

/** What the server sends before it closes the connection, or before `timeoutMs` (then isClosed is false). */
async function untilClosed(port: number, localAddress: string, timeoutMs: number): Promise<{ text: string; isClosed: boolean }> {
  const s = net.connect({ host: '127.0.0.1', port, localAddress });
  let text = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => (text += d));
  s.on('error', () => {});
  const closed = new Promise<boolean>((resolve) => s.once('close', () => resolve(true)));
  const isClosed = await Promise.race([closed, sleep(timeoutMs).then(() => false)]);
  s.destroy();
  return { text, isClosed };
}

describe('max_refused_sessions caps connect-stage refusals too', () => {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.startsWith('{')) lines.push(JSON.parse(l) as LogLine);
      done();
    },
  });
  let dns: DnsTestServer;
  let server: TestServer;
  let store: SqliteStore;
  let dir: string;
  before(async () => {
    // 127.0.0.62 is on the list; 127.0.0.61 is not, but is remembered as refused.
    dns = await startDnsServer({ zones: ['zen.test'], records: ['host-record=62.0.0.127.zen.test,127.0.0.2'] });
    dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-refused-cap-'));
    const config = parseConfig([
      '[tls]', 'enabled = false',
      '[relay]', 'networks = []',
      '[limits]', 'max_refused_sessions = 1', 'refused_session_seconds = 60', 'refused_session_commands = 50',
      '[verdicts]', 'ipv4_prefix = 32',
      '[policy]', 'checks = ["dnsbl"]',
      '[dns]', `servers = ["${dns.server}"]`, 'timeout_ms = 1000', 'tries = 1',
      '[[dnsbl]]', 'zone = "zen.test"',
      '[dnslists]', 'stage = "connect"',
      '',
    ].join('\n'), 'admission-refused.test');
    store = new SqliteStore(path.join(dir, 'state.sqlite'));
    const remembered: StoredVerdict = { action: 'reject', reply: { code: 554, enhanced: '5.7.1', lines: ['Service unavailable; client [127.0.0.61] blocked using zen.test'] }, reason: 'listed', at: Date.now() };
    await store.set(verdictStoreKey('dnsbl', 'connect', '127.0.0.61/32', ''), JSON.stringify(remembered), 3600);
    const pipeline = buildPipeline(config, pino({ level: 'silent' }), store);
    assert.ok(pipeline !== null);
    server = await startTestServer(config, { policy: pipeline, logStream: stream, logLevel: 'info' });
  });
  after(async () => {
    await server?.stop();
    await store?.close();
    await dns?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('while one refused client is held, the next (remembered or DNS-listed) is closed right after its 554', async () => {
    const held = await SmtpClient.connect(server.port, { localAddress: '127.0.0.61' });
    try {
      assert.match((await held.reply())?.last ?? '', /^554 5\.7\.1 /, 'the remembered refusal replaces the greeting');
      await held.expect('NOOP\r\n', 503, 'held in 554 mode');
      // The cap (1) is taken: these are closed after their 554, well before refused_session_seconds (60).
      for (const from of ['127.0.0.62', '127.0.0.61']) {
        const over = await untilClosed(server.port, from, 10_000);
        assert.match(over.text, /^554 5\.7\.1 [^\r\n]*\r\n$/, `${from}: one 554 and nothing else: ${JSON.stringify(over.text)}`);
        assert.ok(over.isClosed, `${from} is closed without waiting for QUIT`);
      }
      const capped = lines.filter((l) => l.msg === 'defense: refused_sessions');
      assert.deepEqual(capped.map((l) => l.client), ['127.0.0.62', '127.0.0.61']);
      assert.equal(capped[0]?.limit, 'limits.max_refused_sessions');
      // The held one is still served in 554 mode, and a legitimate client is greeted.
      await held.expect('NOOP\r\n', 503);
      const ok = await SmtpClient.connect(server.port, { localAddress: '127.0.0.63' });
      assert.equal((await ok.reply())?.code, 220);
      await ok.expect('QUIT\r\n', 221);
      ok.close();
      await held.expect('QUIT\r\n', 221);
    } finally {
      held.close();
    }
    for (let i = 0; i < 200 && server.connectionCount() !== 0; i++) await sleep(10);
    assert.equal(server.connectionCount(), 0);
    // The cap's room came back: a DNS-listed client is held again.
    const again = await SmtpClient.connect(server.port, { localAddress: '127.0.0.62' });
    try {
      assert.equal((await again.reply())?.code, 554);
      await again.expect('NOOP\r\n', 503);
      await again.expect('QUIT\r\n', 221);
    } finally {
      again.close();
    }
  });
});
