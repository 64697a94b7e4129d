// Below spool.min_free_bytes MAIL is answered 452 4.3.1 (before any body is uploaded), on live
// sessions as soon as the monitor sees it and on new ones from their start; once space returns
// MAIL is accepted again. The monitor's probe and interval are injected; the socket is real.

import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultConfig } from '../../src/config/types.ts';
import { startTestServer } from '../helpers/server.ts';
import { smtpConnect } from '../helpers/smtp-client.ts';

const FLOOR = 1_000_000;
const INTERVAL_MS = 20;

function logCollector(): { stream: PassThrough; lines: Array<{ level: number; msg: string; freeBytes?: number }> } {
  const lines: Array<{ level: number; msg: string }> = [];
  const stream = new PassThrough();
  let pending = '';
  stream.setEncoding('utf8').on('data', (d: string) => {
    pending += d;
    const parts = pending.split('\n');
    pending = parts.pop()!;
    for (const p of parts) lines.push(JSON.parse(p) as { level: number; msg: string });
  });
  return { stream, lines };
}

/** Sends MAIL until its reply starts with `prefix` (the monitor polls every INTERVAL_MS); bounded. */
async function mailUntil(send: (line: string) => Promise<string>, prefix: string): Promise<string> {
  let reply = '';
  for (let i = 0; i < 100; i++) {
    reply = await send('MAIL FROM:<a@client.example>');
    if (reply.startsWith(prefix)) return reply;
    if (reply.startsWith('250')) await send('RSET');
    await sleep(INTERVAL_MS);
  }
  return reply;
}

test('spool below its floor: MAIL 452 4.3.1 on live and new sessions, 250 once space returns', async (t) => {
  let freeBytes = FLOOR - 1;
  const config = defaultConfig();
  config.spool.minFreeBytes = FLOOR;
  config.smtp.maxErrors = 1; // the 452s are not client errors: the session must stay open
  const { stream, lines } = logCollector();
  const server = await startTestServer(config, { logStream: stream, logLevel: 'info', spoolSpace: { probe: async () => freeBytes, intervalMs: INTERVAL_MS } });
  t.after(() => server.stop());

  // Low from the start: the very first session is refused at MAIL, twice, and not closed.
  const a = await smtpConnect(server.port);
  t.after(() => a.close());
  assert.match(await a.send('EHLO client.example'), /^250/);
  assert.equal(await a.send('MAIL FROM:<a@client.example>'), '452 4.3.1 Insufficient system storage, try again later');
  assert.equal(await a.send('MAIL FROM:<a@client.example>'), '452 4.3.1 Insufficient system storage, try again later');
  assert.ok(lines.some((l) => l.level === 40 && l.msg === 'spool low on space: MAIL is answered 452 4.3.1' && l.freeBytes === FLOOR - 1));

  // Space returns: the live session gets 250 without reconnecting, and the change is logged.
  freeBytes = FLOOR;
  assert.match(await mailUntil(a.send, '250'), /^250 2\.1\.0/);
  assert.match(await a.send('RCPT TO:<postmaster@localhost>'), /^250/);
  assert.ok(lines.some((l) => l.level === 30 && l.msg === 'spool space back above its floor: accepting mail again'));

  // Low again: the transaction in progress may finish; the next MAIL is refused.
  freeBytes = 10;
  assert.match(await a.send('RSET'), /^250/);
  assert.equal(await mailUntil(a.send, '452'), '452 4.3.1 Insufficient system storage, try again later');
  const b = await smtpConnect(server.port);
  t.after(() => b.close());
  assert.match(await b.send('EHLO client.example'), /^250/);
  assert.equal(await b.send('MAIL FROM:<b@client.example>'), '452 4.3.1 Insufficient system storage, try again later');
  assert.equal(lines.filter((l) => l.msg === 'spool low on space: MAIL is answered 452 4.3.1').length, 2, 'one line per change, not per poll');
  assert.match(await a.send('QUIT'), /^221/);
  assert.match(await b.send('QUIT'), /^221/);
});

test('the real statfs: a floor above the free space refuses MAIL; 0 turns the floor off', async (t) => {
  const config = defaultConfig();
  config.spool.minFreeBytes = Number.MAX_SAFE_INTEGER;
  const server = await startTestServer(config);
  t.after(() => server.stop());
  const c = await smtpConnect(server.port);
  t.after(() => c.close());
  await c.send('EHLO client.example');
  assert.equal(await c.send('MAIL FROM:<a@client.example>'), '452 4.3.1 Insufficient system storage, try again later');
  await c.send('QUIT');

  const off = defaultConfig();
  off.spool.minFreeBytes = 0;
  const probeCalls: string[] = [];
  const server2 = await startTestServer(off, { spoolSpace: { probe: async (dir) => (probeCalls.push(dir), 0) } });
  t.after(() => server2.stop());
  const d = await smtpConnect(server2.port);
  t.after(() => d.close());
  await d.send('EHLO client.example');
  assert.match(await d.send('MAIL FROM:<a@client.example>'), /^250/);
  assert.deepEqual(probeCalls, [], 'no measuring when the floor is off');
  await d.send('QUIT');
});

test('queue state that cannot be written: MAIL 452 4.3.1 on live and new sessions until it can, whatever the spool space says', async (t) => {
  let freeBytes = FLOOR;
  const config = defaultConfig();
  config.spool.minFreeBytes = FLOOR;
  const { stream, lines } = logCollector();
  const server = await startTestServer(config, { logStream: stream, logLevel: 'info', spoolSpace: { probe: async () => freeBytes, intervalMs: INTERVAL_MS } });
  t.after(() => server.stop());
  const a = await smtpConnect(server.port);
  t.after(() => a.close());
  assert.match(await a.send('EHLO client.example'), /^250/);
  server.setQueueStateFailing(true);
  assert.equal(await a.send('MAIL FROM:<a@client.example>'), '452 4.3.1 Insufficient system storage, try again later');
  assert.ok(lines.some((l) => l.level === 40 && l.msg === 'queue state cannot be written: MAIL is answered 452 4.3.1'));
  // The spool going low and coming back does not lift the queue's refusal.
  freeBytes = 10;
  await new Promise((r) => setTimeout(r, INTERVAL_MS * 3));
  freeBytes = FLOOR;
  await new Promise((r) => setTimeout(r, INTERVAL_MS * 3));
  const b = await smtpConnect(server.port);
  t.after(() => b.close());
  assert.match(await b.send('EHLO client.example'), /^250/);
  assert.equal(await b.send('MAIL FROM:<b@client.example>'), '452 4.3.1 Insufficient system storage, try again later');
  server.setQueueStateFailing(false);
  assert.match(await a.send('MAIL FROM:<a@client.example>'), /^250 2\.1\.0/);
  assert.match(await b.send('MAIL FROM:<b@client.example>'), /^250 2\.1\.0/);
  assert.ok(lines.some((l) => l.msg === 'queue state writable again: accepting mail'));
});
