// Security: a client that pipelines commands without ever reading the replies cannot make the
// server buffer replies without bound: reading stops while the reply buffer is full; nor can a
// client that keeps sending while its command waits for a policy verdict.

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { defaultConfig } from '../../src/config/types.ts';
import { pino } from 'pino';
import type { Check } from '../../src/policy/check.ts';
import { PolicyPipeline } from '../../src/policy/pipeline.ts';
import { startTestServer } from '../helpers/server.ts';

/** 300 batches of 10,000 NOOPs: 18 MB, far more than the kernel's socket buffers hold. */
const MAX_BATCHES = 300;

/** Writes NOOP batches until our own send buffer stays full for 500 ms (the server stopped
 *  reading) or MAX_BATCHES were written. */
async function floodUntilRefused(socket: net.Socket): Promise<{ written: number; batch: Buffer }> {
  const batch = Buffer.from('NOOP\r\n'.repeat(10_000));
  let written = 0;
  for (let i = 0; i < MAX_BATCHES; i++) {
    const ok = socket.write(batch);
    written += batch.length;
    if (!ok) {
      const drained = await Promise.race([new Promise((r) => socket.once('drain', () => r(true))), new Promise((r) => setTimeout(() => r(false), 500))]);
      if (!drained) break;
    }
  }
  return { written, batch };
}

/** Polls `isDone` every 20 ms, at most 20 s. */
function waitFor(isDone: () => boolean, failure: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      clearInterval(check);
      reject(new Error(failure));
    }, 20_000);
    const check = setInterval(() => {
      if (!isDone()) return;
      clearInterval(check);
      clearTimeout(timer);
      resolve();
    }, 20);
  });
}

test('replies that the client does not read stop the server from reading more', { timeout: 30_000 }, async (t) => {
  const cfg = defaultConfig();
  // The flood is NOOPs: the idle-command cap (limits.max_idle_commands) would end it first.
  cfg.limits.maxIdleCommands = 0;
  const server = await startTestServer(cfg);
  t.after(() => server.stop());
  const socket = net.connect({ host: '127.0.0.1', port: server.port });
  await new Promise((r) => socket.once('connect', r));
  socket.pause(); // never read
  const { written, batch } = await floodUntilRefused(socket);
  // Each NOOP gets a 16-octet reply: had the server kept reading, it would have queued replies
  // for everything written (kernel socket buffers alone hold a few MB).
  t.diagnostic(`written before the server stopped reading: ${written} octets`);
  assert.ok(written < MAX_BATCHES * batch.length, `the server kept reading (${written} octets written)`);
  // Once the client reads, everything flows again and the session still works.
  socket.resume();
  let text = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => (text += d));
  socket.write('QUIT\r\n');
  await waitFor(() => text.includes('221 2.0.0 Bye'), 'no 221 after resuming');
  socket.destroy();
});

test('input sent while a policy verdict is pending is not read without bound', { timeout: 30_000 }, async (t) => {
  const cfg = defaultConfig();
  let release: () => void = () => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  const slow: Check = { name: 'slow', stages: ['mail'], timeoutMs: 20_000, run: async () => (await held, { action: 'continue' }) };
  const server = await startTestServer(cfg, { policy: new PolicyPipeline([slow], { log: pino({ level: 'silent' }), defaultTimeoutMs: 20_000 }) });
  t.after(() => server.stop());
  const socket = net.connect({ host: '127.0.0.1', port: server.port });
  await new Promise((r) => socket.once('connect', r));
  socket.setEncoding('latin1');
  let text = '';
  socket.on('data', (d: string) => (text += d));
  socket.write('HELO c.example\r\nMAIL FROM:<a@c.example>\r\n');
  const { written, batch } = await floodUntilRefused(socket);
  t.diagnostic(`written while the verdict was pending: ${written} octets`);
  assert.ok(written < MAX_BATCHES * batch.length, `the server kept reading while it waited (${written} octets written)`);
  assert.doesNotMatch(text, /250 2\.1\.0/, 'MAIL is still waiting for its verdict');
  release();
  await waitFor(() => text.includes('250 2.1.0'), 'MAIL never answered after the verdict');
  socket.destroy();
});
