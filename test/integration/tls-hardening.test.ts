// STARTTLS hardening over real sockets: client-initiated renegotiation is refused (Node's own
// client and `openssl s_client -starttls smtp` sending "R"), TLS 1.0/1.1 are refused, the
// server's cipher order wins, CBC suites are refused by default but can be configured, and a
// client that stalls in the handshake is closed at tls.handshake_timeout_seconds.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import tls from 'node:tls';
import { defaultConfig, type Config } from '../../src/config/types.ts';
import { ownProcess } from '../helpers/owned-process.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/** Connects, says EHLO and STARTTLS, and resolves with the raw socket once the server said 220. */
async function atStartTls(port: number): Promise<net.Socket> {
  const s = net.connect({ host: '127.0.0.1', port });
  s.on('error', () => {});
  let buf = '';
  const onData = (d: Buffer): void => {
    buf += d.toString('latin1');
  };
  s.on('data', onData);
  const until = async (re: RegExp): Promise<void> => {
    for (let i = 0; i < 200 && !re.test(buf); i++) await sleep(10);
    assert.match(buf, re);
  };
  await until(/^220 /m);
  s.write('EHLO client.example\r\n');
  await until(/^250 /m);
  buf = '';
  s.write('STARTTLS\r\n');
  await until(/^220 /m);
  s.off('data', onData);
  return s;
}

type Handshake = { ok: true; socket: tls.TLSSocket; protocol: string; cipher: string } | { ok: false; error: string };

async function handshake(port: number, options: tls.ConnectionOptions): Promise<Handshake> {
  const raw = await atStartTls(port);
  const socket = tls.connect({ socket: raw, rejectUnauthorized: false, servername: 'mx.example.test', ...options });
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, error: 'handshake timed out' }), 5000);
    socket.once('secure', () => {
      clearTimeout(timer);
      resolve({ ok: true, socket, protocol: socket.getProtocol() ?? '', cipher: socket.getCipher()?.name ?? '' });
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ok: false, error: err.message });
    });
  });
}

function tlsConfig(over: (c: Config) => void = () => {}): Config {
  const config = defaultConfig();
  over(config);
  return config;
}

describe('STARTTLS with the default TLS policy', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer(tlsConfig((c) => (c.tls.handshakeTimeoutSeconds = 1)));
  });
  after(async () => server.stop());

  test('TLS 1.2: a client-initiated renegotiation is refused (none of 20 attempts succeeds); the session is ended', async () => {
    const h = await handshake(server.port, { maxVersion: 'TLSv1.2' });
    assert.ok(h.ok, !h.ok ? h.error : '');
    assert.equal(h.protocol, 'TLSv1.2');
    const errors: string[] = [];
    h.socket.on('error', (err) => errors.push(err.message));
    let accepted = 0;
    for (let i = 0; i < 20 && !h.socket.destroyed; i++) {
      const outcome = await new Promise<string>((resolve) => {
        const timer = setTimeout(() => resolve('no answer'), 2000);
        h.socket.once('error', (err) => {
          clearTimeout(timer);
          resolve(`error: ${err.message}`);
        });
        const isStarted = h.socket.renegotiate({ rejectUnauthorized: false }, (err) => {
          clearTimeout(timer);
          resolve(err ? `error: ${err.message}` : 'ok');
        });
        if (!isStarted) {
          clearTimeout(timer);
          resolve('not started');
        }
      });
      if (outcome === 'ok') accepted++;
      else break;
    }
    assert.equal(accepted, 0, 'renegotiations accepted');
    for (let i = 0; i < 100 && !h.socket.destroyed; i++) await sleep(10);
    assert.ok(errors.some((e) => /no renegotiation/i.test(e)), `the server answered no_renegotiation: ${errors.join('; ')}`);
    h.socket.destroy();
  });

  test('openssl s_client -starttls smtp -tls1_2, "R": the renegotiation fails', { timeout: 20_000 }, async () => {
    const child = spawn('openssl', ['s_client', '-starttls', 'smtp', '-connect', `127.0.0.1:${server.port}`, '-tls1_2', '-quiet', '-no_ign_eof'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const owned = ownProcess(child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('latin1')));
    child.stderr.on('data', (d: Buffer) => (out += d.toString('latin1')));
    try {
      for (let i = 0; i < 300 && !/^250 /m.test(out) && !owned.isExited(); i++) {
        if (i === 20) child.stdin.write('EHLO client.example\r\n');
        await sleep(10);
      }
      child.stdin.write('R\n');
      for (let i = 0; i < 300 && !owned.isExited(); i++) await sleep(10);
      assert.match(out, /RENEGOTIATING/, out);
      assert.match(out, /no renegotiation|alert/i, out);
      assert.ok(owned.isExited(), 's_client ended: the connection did not survive the attempt');
    } finally {
      await owned.stop();
    }
  });

  test('TLS 1.1 and 1.0 are refused; TLS 1.3 is offered', async () => {
    for (const v of ['TLSv1.1', 'TLSv1'] as const) {
      const h = await handshake(server.port, { minVersion: v, maxVersion: v, ciphers: 'DEFAULT@SECLEVEL=0' });
      assert.equal(h.ok, false, `${v} was accepted`);
    }
    const h = await handshake(server.port, {});
    assert.ok(h.ok && h.protocol === 'TLSv1.3');
    if (h.ok) h.socket.destroy();
  });

  test('the server\'s cipher order wins over the client\'s', async () => {
    // The client prefers AES-256; the server's list puts AES-128 first.
    const h = await handshake(server.port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256' });
    assert.ok(h.ok, !h.ok ? h.error : '');
    assert.equal(h.cipher, 'ECDHE-ECDSA-AES128-GCM-SHA256');
    h.socket.destroy();
  });

  test('a client offering only CBC suites is refused', async () => {
    const h = await handshake(server.port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA' });
    assert.equal(h.ok, false);
  });

  test('a client that stalls after STARTTLS is closed at tls.handshake_timeout_seconds, not the command timeout', async () => {
    const raw = await atStartTls(server.port);
    const started = Date.now();
    const closed = await Promise.race([new Promise<boolean>((resolve) => raw.once('close', () => resolve(true))), sleep(5000).then(() => false)]);
    raw.destroy();
    assert.ok(closed, 'still open after 5 s');
    const ms = Date.now() - started;
    assert.ok(ms >= 900 && ms < 3000, `closed after ${ms} ms`);
  });
});

test('tls.ciphers can allow CBC suites when the operator asks for them', async () => {
  const server = await startTestServer(tlsConfig((c) => (c.tls.ciphers = `${c.tls.ciphers}:ECDHE-ECDSA-AES128-SHA`)));
  try {
    const h = await handshake(server.port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-SHA' });
    assert.ok(h.ok, !h.ok ? h.error : '');
    assert.equal(h.cipher, 'ECDHE-ECDSA-AES128-SHA');
    h.socket.destroy();
  } finally {
    await server.stop();
  }
});
