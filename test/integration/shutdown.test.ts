// Graceful stop answers idle sessions 421 4.3.2 at once, and a client that half-closes right
// after its data still gets its 250 (a lost 250 means a duplicate delivery on retry).

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { defaultConfig } from '../../src/config/types.ts';
import { startTestServer } from '../helpers/server.ts';

function collect(socket: net.Socket): { text: () => string; closed: Promise<void> } {
  let text = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => (text += d));
  const closed = new Promise<void>((r) => socket.on('close', () => r()));
  return { text: () => text, closed };
}

test('stop() answers an idle session 421 4.3.2 without waiting for the client', { timeout: 20_000 }, async () => {
  const server = await startTestServer(defaultConfig());
  const socket = net.connect({ host: '127.0.0.1', port: server.port });
  const c = collect(socket);
  socket.write('EHLO c.example\r\n');
  while (!c.text().includes('250 ')) await new Promise((r) => setTimeout(r, 10));
  const started = Date.now();
  await server.stop();
  await c.closed;
  assert.match(c.text(), /421 4\.3\.2 Service shutting down, closing connection\r\n$/);
  assert.ok(Date.now() - started < 5000, 'stop did not wait for the client');
});

test('half-close right after the data: the 250 and the QUIT reply still arrive', { timeout: 20_000 }, async (t) => {
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  const server = await startTestServer(cfg);
  t.after(() => server.stop());
  for (let i = 0; i < 5; i++) {
    const socket = net.connect({ host: '127.0.0.1', port: server.port });
    const c = collect(socket);
    socket.write('EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
    while (!c.text().includes('354 ')) await new Promise((r) => setTimeout(r, 5));
    socket.end('hello\r\n.\r\nQUIT\r\n');
    await c.closed;
    assert.match(c.text(), /250 2\.0\.0 Ok: queued as \S+\r\n221 2\.0\.0 Bye\r\n$/);
  }
});

test('stop() while a client is in the middle of its data: the message is finished, answered 250, then 421', { timeout: 20_000 }, async (t) => {
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  const server = await startTestServer(cfg);
  t.after(() => server.stop());
  const socket = net.connect({ host: '127.0.0.1', port: server.port });
  const c = collect(socket);
  socket.write('EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
  while (!c.text().includes('354 ')) await new Promise((r) => setTimeout(r, 5));
  socket.write('Subject: half\r\n\r\nfirst half\r\n');
  await new Promise((r) => setTimeout(r, 50));
  const stopped = server.stop();
  await new Promise((r) => setTimeout(r, 200));
  assert.doesNotMatch(c.text(), /421/, 'no 421 while the data is arriving');
  socket.write('second half\r\n.\r\n');
  await c.closed;
  await stopped;
  assert.match(c.text(), /250 2\.0\.0 Ok: queued as \S+\r\n421 4\.3\.2 Service shutting down, closing connection\r\n$/);
});

test('stop() while a BDAT message is between chunks: the LAST chunk is answered 250, then 421', { timeout: 20_000 }, async (t) => {
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  const server = await startTestServer(cfg);
  t.after(() => server.stop());
  const socket = net.connect({ host: '127.0.0.1', port: server.port });
  const c = collect(socket);
  socket.write('EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT 15\r\nSubject: b\r\n\r\nx\r\n');
  while (!c.text().includes('15 octets received')) await new Promise((r) => setTimeout(r, 5));
  const stopped = server.stop();
  await new Promise((r) => setTimeout(r, 200));
  assert.doesNotMatch(c.text(), /421/);
  socket.write('BDAT 3 LAST\r\ny\r\n');
  await c.closed;
  await stopped;
  assert.match(c.text(), /250 2\.0\.0 Ok: queued as \S+\r\n421 4\.3\.2 Service shutting down, closing connection\r\n$/);
});

test('a client that never ends its data is dropped at the stop grace deadline', { timeout: 20_000 }, async () => {
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  cfg.smtp.stopGraceSeconds = 1;
  const server = await startTestServer(cfg);
  const socket = net.connect({ host: '127.0.0.1', port: server.port });
  const c = collect(socket);
  socket.write('EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
  while (!c.text().includes('354 ')) await new Promise((r) => setTimeout(r, 5));
  socket.write('Subject: never ends\r\n\r\n');
  const started = Date.now();
  await server.stop();
  await c.closed;
  const took = Date.now() - started;
  assert.ok(took >= 900 && took < 5000, `dropped after the grace (${took} ms)`);
  assert.doesNotMatch(c.text(), /250 2\.0\.0 Ok: queued/);
});
