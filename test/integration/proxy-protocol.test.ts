// PROXY protocol over real sockets (smtp.proxy_protocol, [proxy]): a test client writes v1 and v2
// headers, and a real HAProxy relays with send-proxy and send-proxy-v2. Checks that the client the
// header names is the one relay control, the log and Received: see, that the proxy's own address
// is logged beside it, and that untrusted peers, late or malformed headers get no greeting at all.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultConfig, type Config } from '../../src/config/types.ts';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { ownProcess } from '../helpers/owned-process.ts';
import { freePort } from '../helpers/ports.ts';
import { logSink, type LogLine } from '../helpers/log-sink.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** A v2 PROXY (TCP over IPv4) or LOCAL header: the test's own encoder. */
function v2Header(command: 'proxy' | 'local', src = '203.0.113.9', sport = 40000, dst = '192.0.2.25', dport = 25): Buffer {
  if (command === 'local') return Buffer.concat([SIGNATURE, Buffer.from([0x20, 0x00, 0, 0])]);
  const body = Buffer.from([...src.split('.').map(Number), ...dst.split('.').map(Number), sport >> 8, sport & 0xff, dport >> 8, dport & 0xff]);
  return Buffer.concat([SIGNATURE, Buffer.from([0x21, 0x11, 0, body.length]), body]);
}

function proxyConfig(trusted: string[], over: (c: Config) => void = () => {}): Config {
  const config = defaultConfig();
  config.smtp.proxyProtocol = true;
  config.proxy.trusted = trusted;
  config.proxy.headerTimeoutSeconds = 1;
  config.tls.enabled = false;
  over(config);
  return config;
}

/** Everything the server sends on a raw connection until it closes (bounded). */
async function rawSession(port: number, send: (s: net.Socket) => void, opts: { localAddress?: string; timeoutMs?: number } = {}): Promise<{ received: string; closedAfterMs: number }> {
  const started = Date.now();
  const s = net.connect({ host: '127.0.0.1', port, ...(opts.localAddress === undefined ? {} : { localAddress: opts.localAddress }) });
  let received = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => (received += d));
  s.on('error', () => {});
  await new Promise<void>((resolve) => s.once('connect', resolve));
  send(s);
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  const isClosed = await Promise.race([closed.then(() => true), sleep(opts.timeoutMs ?? 5000).then(() => false)]);
  s.destroy();
  assert.ok(isClosed, `the server did not close the connection; it sent ${JSON.stringify(received)}`);
  return { received, closedAfterMs: Date.now() - started };
}

async function storedContents(server: TestServer): Promise<string[]> {
  const out: string[] = [];
  for await (const e of scanSpool(server.spoolDir)) out.push((await readMessage(server.spoolDir, e.envelope.queueId, e.location))!.content.toString('latin1'));
  return out;
}

/** After the header: a full transaction to a local recipient, and a relay attempt. */
async function transaction(c: SmtpClient): Promise<{ relayCode: number }> {
  await c.expect('EHLO client.example\r\n', 250);
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  const relay = await c.command('RCPT TO:<someone@elsewhere.example>');
  await c.expect('RCPT TO:<alice@localhost>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  await c.expect('Subject: t\r\n\r\nhello\r\n.\r\n', 250);
  await c.expect('QUIT\r\n', 221);
  return { relayCode: relay?.code ?? 0 };
}

describe('PROXY protocol from a test client', () => {
  const log = logSink();
  let server: TestServer;
  before(async () => {
    server = await startTestServer(proxyConfig(['127.0.0.1/32']), { logStream: log.stream, logLevel: 'info' });
  });
  after(async () => server.stop());

  test('v1: no greeting before the header; then the header\'s client is the one relay control, the log and Received: see', async () => {
    const c = await SmtpClient.connect(server.port);
    // Nothing is sent before the header, however long the proxy waits (within the deadline).
    assert.equal(await c.line(300).catch(() => null), null);
    c.write('PROXY TCP4 203.0.113.9 192.0.2.25 40000 25\r\n');
    assert.equal((await c.reply())?.code, 220);
    // 127.0.0.1 (the proxy) may relay by relay.networks; 203.0.113.9 (the client) may not.
    const { relayCode } = await transaction(c);
    assert.equal(relayCode, 554);
    const connect = log.lines.find((l) => l.msg === 'connect' && l.client === '203.0.113.9');
    assert.ok(connect !== undefined, 'a connect line with the real client');
    assert.equal(connect.proxy, '127.0.0.1');
    assert.equal(connect.port, 40000);
    assert.equal(connect.relay, false);
    const stored = await storedContents(server);
    assert.ok(stored.some((m) => /^Received: from client\.example \([^)]*203\.0\.113\.9[^)]*\)/m.test(m)), `Received names the real client: ${stored.map((m) => m.split('\r\n')[0]).join(' | ')}`);
  });

  test('v2 with the first command in the same write: the bytes after the header are the client\'s', async () => {
    const c = await SmtpClient.connect(server.port);
    c.write(Buffer.concat([v2Header('proxy', '198.51.100.77', 5555), Buffer.from('EHLO early.example\r\n')]));
    assert.equal((await c.reply())?.code, 220);
    assert.equal((await c.reply())?.code, 250);
    await c.expect('QUIT\r\n', 221);
    assert.ok(log.lines.some((l) => l.msg === 'connect' && l.client === '198.51.100.77' && l.port === 5555 && l.proxy === '127.0.0.1'));
  });

  test('v2 header split over several writes', async () => {
    const c = await SmtpClient.connect(server.port);
    const header = v2Header('proxy', '198.51.100.78');
    for (const part of [header.subarray(0, 5), header.subarray(5, 14), header.subarray(14)]) {
      c.write(part);
      await sleep(30);
    }
    assert.equal((await c.reply())?.code, 220);
    await c.expect('QUIT\r\n', 221);
    assert.ok(log.lines.some((l) => l.msg === 'connect' && l.client === '198.51.100.78'));
  });

  test('v2 LOCAL (a health check) keeps the proxy\'s own address: it may relay as 127.0.0.1', async () => {
    const c = await SmtpClient.connect(server.port);
    c.write(v2Header('local'));
    assert.equal((await c.reply())?.code, 220);
    const { relayCode } = await transaction(c);
    assert.equal(relayCode, 250);
  });

  test('a header late past proxy.header_timeout_seconds: closed, nothing sent', async () => {
    const { received, closedAfterMs } = await rawSession(server.port, () => {});
    assert.equal(received, '');
    assert.ok(closedAfterMs >= 900 && closedAfterMs < 3000, `closed after ${closedAfterMs} ms`);
    assert.ok(log.lines.some((l) => l.msg === 'PROXY protocol header refused: closed' && /no complete header within 1000 ms/.test(String(l.reason)) && l.rule === 'proxy_timeout' && l.limit === '1s'));
  });

  test('a client that speaks SMTP at once, or sends a malformed header: closed, nothing sent', async () => {
    for (const bytes of ['EHLO x\r\n', 'PROXY TCP4 203.0.113.9 192.0.2.25 40000\r\n', `PROXY UNKNOWN ${'x'.repeat(120)}`]) {
      const { received, closedAfterMs } = await rawSession(server.port, (s) => s.write(bytes));
      assert.equal(received, '', bytes);
      assert.ok(closedAfterMs < 900, `${JSON.stringify(bytes)}: closed at once, not at the deadline (${closedAfterMs} ms)`);
    }
    assert.ok(log.lines.some((l) => l.reason === 'not a PROXY protocol header'));
    assert.ok(log.lines.some((l) => l.reason === 'v1 header longer than 107 octets'));
  });
});

test('a connection from an address not in proxy.trusted is closed at once, without a greeting, and logged', async () => {
  const log = logSink();
  const server = await startTestServer(proxyConfig(['127.0.0.3/32']), { logStream: log.stream, logLevel: 'info' });
  try {
    const { received, closedAfterMs } = await rawSession(server.port, (s) => s.write('PROXY TCP4 203.0.113.9 192.0.2.25 40000 25\r\n'), { localAddress: '127.0.0.2' });
    assert.equal(received, '');
    assert.ok(closedAfterMs < 900, `closed after ${closedAfterMs} ms`);
    const line = log.lines.find((l) => l.rule === 'proxy_untrusted');
    assert.equal(line?.limit, 'proxy.trusted');
    assert.equal(line?.client, '127.0.0.2');
    assert.equal(log.lines.some((l) => l.msg === 'connect'), false, 'no session was started');
    assert.equal(server.connectionCount(), 0);
  } finally {
    await server.stop();
  }
});

test('a stop while a proxy has not sent its header closes that connection at once, with nothing sent', async () => {
  const server = await startTestServer(proxyConfig(['127.0.0.1/32'], (c) => (c.proxy.headerTimeoutSeconds = 30)));
  const s = net.connect({ host: '127.0.0.1', port: server.port });
  let received = '';
  s.on('data', (d: Buffer) => (received += d.toString('latin1')));
  s.on('error', () => {});
  await new Promise<void>((resolve) => s.once('connect', resolve));
  s.write('PROXY TCP4 203.0.113.9');
  for (let i = 0; i < 100 && server.connectionCount() === 0; i++) await sleep(10);
  const started = Date.now();
  await server.stop();
  const isClosed = await Promise.race([new Promise<boolean>((resolve) => s.once('close', () => resolve(true))), sleep(3000).then(() => false)]);
  s.destroy();
  assert.ok(isClosed);
  assert.ok(Date.now() - started < 2000, `stop took ${Date.now() - started} ms`);
  assert.equal(received, '');
});

test('with smtp.proxy_protocol off (the default) a PROXY line is an unknown command, not a header', async () => {
  const server = await startTestServer(proxyConfig(['127.0.0.1/32'], (c) => (c.smtp.proxyProtocol = false)));
  try {
    const c = await SmtpClient.connect(server.port);
    assert.equal((await c.reply())?.code, 220);
    const r = await c.command('PROXY TCP4 203.0.113.9 192.0.2.25 40000 25');
    assert.equal(r?.code, 500);
    await c.expect('QUIT\r\n', 221);
  } finally {
    await server.stop();
  }
});

const hasHaproxy = spawnSync('haproxy', ['-v'], { stdio: 'ignore' }).status === 0;

describe('through a real HAProxy (send-proxy, send-proxy-v2)', { skip: hasHaproxy ? false : 'haproxy not installed (scripts/test-deps.sh)' }, () => {
  const log = logSink();
  let server: TestServer;
  let dir: string;
  let haproxy: ReturnType<typeof ownProcess>;
  const ports = { v1: 0, v2: 0 };
  before(async () => {
    // The proxy connects from 127.0.0.3, the client from 127.0.0.2: the two are told apart.
    server = await startTestServer(proxyConfig(['127.0.0.3/32'], (c) => (c.relay.networks = ['127.0.0.3/32'])), { logStream: log.stream, logLevel: 'info' });
    ports.v1 = await freePort();
    ports.v2 = await freePort();
    dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-haproxy-'));
    const cfg = path.join(dir, 'haproxy.cfg');
    writeFileSync(cfg, [
      'global', '    maxconn 50',
      'defaults', '    mode tcp', '    timeout connect 2s', '    timeout client 10s', '    timeout server 10s',
      'frontend smtp_v1', `    bind 127.0.0.1:${ports.v1}`, '    default_backend mta_v1',
      'backend mta_v1', `    server mta 127.0.0.1:${server.port} send-proxy source 127.0.0.3`,
      'frontend smtp_v2', `    bind 127.0.0.1:${ports.v2}`, '    default_backend mta_v2',
      'backend mta_v2', `    server mta 127.0.0.1:${server.port} send-proxy-v2 source 127.0.0.3`,
      '',
    ].join('\n'));
    const child = spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'ignore'] });
    haproxy = ownProcess(child);
    for (let i = 0; i < 100; i++) {
      const isUp = await new Promise<boolean>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: ports.v2 });
        s.once('connect', () => (s.destroy(), resolve(true)));
        s.once('error', () => resolve(false));
      });
      if (isUp) break;
      assert.ok(!haproxy.isExited(), 'haproxy exited at start');
      await sleep(50);
    }
  });
  after(async () => {
    await haproxy?.stop();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const version of ['v1', 'v2'] as const) {
    test(`${version}: the client behind HAProxy is the one the session sees; the proxy is logged beside it`, async () => {
      const c = await SmtpClient.connect(ports[version], { localAddress: '127.0.0.2' });
      const clientPort = c.socket.localPort;
      assert.equal((await c.reply())?.code, 220);
      // relay.networks holds the proxy only: the client behind it may not relay.
      const { relayCode } = await transaction(c);
      assert.equal(relayCode, 554);
      const connect = log.lines.find((l) => l.msg === 'connect' && l.port === clientPort);
      assert.ok(connect !== undefined, `a connect line for port ${clientPort}`);
      assert.equal(connect.client, '127.0.0.2');
      assert.equal(connect.proxy, '127.0.0.3');
    });
  }
});
