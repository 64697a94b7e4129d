// A client that closes during the STARTTLS handshake (before its ClientHello, halfway through it,
// or right after it) must not leave the server's socket in CLOSE-WAIT and the session counted as
// live: the socket is released at once and the event logged. Raw TCP clients on loopback.

import assert from 'node:assert/strict';
import net from 'node:net';
import { Duplex, PassThrough } from 'node:stream';
import tls from 'node:tls';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultConfig } from '../../src/config/types.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/** Well under the 300 s command timeout that used to be the only way out. */
const RELEASE_WITHIN_MS = 3000;

let server: TestServer;
const logLines: Array<{ msg: string; sid?: string; reason?: string }> = [];

before(async () => {
  const stream = new PassThrough();
  let pending = '';
  stream.setEncoding('utf8').on('data', (d: string) => {
    pending += d;
    const parts = pending.split('\n');
    pending = parts.pop()!;
    for (const p of parts) logLines.push(JSON.parse(p) as { msg: string });
  });
  const config = defaultConfig();
  config.spool.minFreeBytes = 0;
  server = await startTestServer(config, { logStream: stream, logLevel: 'info' });
});
after(() => server.stop());

/** The bytes a real TLS client sends first (its ClientHello), captured without any network. */
async function clientHello(): Promise<Buffer> {
  let resolveHello: (b: Buffer) => void = () => undefined;
  const hello = new Promise<Buffer>((r) => (resolveHello = r));
  const sink = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      resolveHello(chunk);
      cb();
    },
  });
  const client = tls.connect({ socket: sink, servername: 'mx.example.test', rejectUnauthorized: false });
  client.on('error', () => undefined);
  const bytes = await hello;
  client.destroy();
  return bytes;
}

/** Connects, says EHLO and STARTTLS, and resolves once the server has answered 220 to it. */
async function atStartTls(): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port: server.port });
  socket.on('error', () => undefined);
  let text = '';
  const waitFor = (re: RegExp): Promise<void> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${re} in ${JSON.stringify(text)}`)), 5000);
      const check = (): void => {
        if (!re.test(text)) return;
        clearTimeout(timer);
        socket.off('data', onData);
        resolve();
      };
      const onData = (d: Buffer): void => {
        text += d.toString('latin1');
        check();
      };
      socket.on('data', onData);
      check();
    });
  await waitFor(/^220 .*\r\n/m);
  socket.write('EHLO client.example\r\n');
  await waitFor(/^250 .*\r\n/m);
  text = '';
  socket.write('STARTTLS\r\n');
  await waitFor(/^220 .*\r\n/m);
  return socket;
}

async function assertReleased(label: string, logsBefore: number): Promise<void> {
  const deadline = Date.now() + RELEASE_WITHIN_MS;
  while (server.connectionCount() > 0 && Date.now() < deadline) await sleep(20);
  assert.equal(server.connectionCount(), 0, `${label}: the session is still counted as live`);
  await sleep(20);
  const lines = logLines.slice(logsBefore);
  assert.ok(lines.some((l) => l.msg === 'client closed during the TLS handshake' && typeof l.sid === 'string'), `${label}: logged (${JSON.stringify(lines.map((l) => l.msg))})`);
  assert.ok(lines.some((l) => l.msg === 'disconnect'), `${label}: the disconnect line`);
}

test('a client that closes right after the 220 to STARTTLS (before its ClientHello) is released at once', async () => {
  const logsBefore = logLines.length;
  const socket = await atStartTls();
  assert.equal(server.connectionCount(), 1);
  socket.end();
  await assertReleased('before ClientHello', logsBefore);
  socket.destroy();
});

test('a client that sends half a ClientHello and closes is released at once', async () => {
  const hello = await clientHello();
  const logsBefore = logLines.length;
  const socket = await atStartTls();
  socket.write(hello.subarray(0, Math.floor(hello.length / 2)));
  await sleep(50);
  socket.end();
  await assertReleased('half a ClientHello', logsBefore);
  socket.destroy();
});

test('a client that sends its whole ClientHello and closes without finishing is released at once', async () => {
  const hello = await clientHello();
  const logsBefore = logLines.length;
  const socket = await atStartTls();
  let answered = false;
  socket.once('data', () => (answered = true)); // the server's ServerHello...
  socket.write(hello);
  const deadline = Date.now() + 2000;
  while (!answered && Date.now() < deadline) await sleep(10);
  assert.ok(answered, 'the server answered the ClientHello');
  socket.end();
  await assertReleased('after ClientHello', logsBefore);
  socket.destroy();
});

test('a client that resets the connection during the handshake is released at once', async () => {
  const hello = await clientHello();
  const logsBefore = logLines.length;
  const socket = await atStartTls();
  socket.write(hello.subarray(0, 10));
  await sleep(50);
  socket.resetAndDestroy();
  const deadline = Date.now() + RELEASE_WITHIN_MS;
  while (server.connectionCount() > 0 && Date.now() < deadline) await sleep(20);
  assert.equal(server.connectionCount(), 0);
  await sleep(20);
  assert.ok(logLines.slice(logsBefore).some((l) => l.msg === 'TLS handshake failed' || l.msg === 'client closed during the TLS handshake'));
});
