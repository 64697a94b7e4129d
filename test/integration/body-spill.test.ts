// Large messages over a real socket: past 1 MiB the body streams to its file in the spool while it
// arrives; the stored message is byte for byte what was sent (our Received and a content check's
// field above it), a content check reads the body as a stream from the file, and no body file is
// left behind, whether the message was stored, refused or abandoned.

import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { defaultConfig } from '../../src/config/types.ts';
import type { Check } from '../../src/policy/check.ts';
import { PolicyPipeline } from '../../src/policy/pipeline.ts';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';
import { startTestServer } from '../helpers/server.ts';

/** Counts the body's octets as a stream and notes its last line. */
const streamCheck: Check = {
  name: 'stream',
  stages: ['content'],
  async run(ctx) {
    let octets = 0;
    let tail = Buffer.alloc(0);
    for await (const chunk of ctx.message!.body()) {
      octets += chunk.length;
      tail = Buffer.concat([tail, chunk]).subarray(-40);
    }
    const last = tail.toString('latin1').trimEnd().split('\r\n').at(-1);
    return { action: 'continue', edits: { headers: [{ op: 'add', field: `X-Body: ${octets} ${last}` }] } };
  },
};

function bigBody(bytes: number): string {
  const lines: string[] = [];
  let n = 0;
  for (let i = 0; n < bytes; i++) {
    const l = `line ${i} ${'q'.repeat(64)}`;
    lines.push(l);
    n += l.length + 2;
  }
  lines.push('THE END');
  return `${lines.join('\r\n')}\r\n`;
}

async function bodyFiles(spoolDir: string): Promise<string[]> {
  return (await readdir(path.join(spoolDir, 'tmp'))).filter((f) => f.endsWith('.body'));
}

async function noBodyFilesLeft(spoolDir: string): Promise<void> {
  for (let i = 0; i < 50 && (await bodyFiles(spoolDir)).length > 0; i++) await sleep(20);
  assert.deepEqual(await bodyFiles(spoolDir), [], 'no body file is left in tmp/');
}

test('a 3 MB message streams to its body file; stored byte for byte; a content check reads it as a stream', async (t) => {
  const config = defaultConfig();
  config.domains.local = ['example.test'];
  const pipeline = new PolicyPipeline([streamCheck], { log: pino({ level: 'silent' }), defaultTimeoutMs: 10_000 });
  const server = await startTestServer(config, { policy: pipeline });
  t.after(server.stop);
  const header = 'Subject: large\r\nMessage-ID: <big@client.example>\r\n\r\n';
  const text = bigBody(3_000_000);
  const c = await SmtpClient.connect(server.port);
  t.after(() => c.close());
  await c.expect('', 220, 'greeting');
  await c.expect('EHLO client.example\r\n', 250);
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  await c.expect('RCPT TO:<alice@example.test>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  // Sent in pieces, as a real client would; each line dot-stuffed where needed (none start with ".").
  for (let at = 0; at < text.length; at += 100_000) c.write(at === 0 ? header + text.slice(0, 100_000) : text.slice(at, at + 100_000));
  const ok = await c.expect('.\r\n', 250, 'end of data');
  const queueId = /queued as (\S+)/.exec(ok.text)![1];
  // The same session: a second large message, BDAT in two chunks.
  const msg = header + text;
  const half = Math.floor(msg.length / 2);
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  await c.expect('RCPT TO:<alice@example.test>\r\n', 250);
  await c.expect(`BDAT ${half}\r\n${msg.slice(0, half)}`, 250, 'first chunk');
  const bdatId = /queued as (\S+)/.exec((await c.expect(`BDAT ${msg.length - half} LAST\r\n${msg.slice(half)}`, 250, 'last chunk')).text)![1];
  // A third one refused after its end (a bare LF far past the threshold): nothing stored.
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  await c.expect('RCPT TO:<alice@example.test>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  c.write(header + text);
  await c.expect('bare\nlf\r\n.\r\n', 550, 'refused content');
  await c.expect('QUIT\r\n', 221);

  const stored = new Map<string, string>();
  for await (const e of scanSpool(server.spoolDir)) stored.set(e.envelope.queueId, (await readMessage(server.spoolDir, e.envelope.queueId, e.location))!.content.toString('latin1'));
  assert.deepEqual([...stored.keys()].sort(), [queueId, bdatId].sort());
  for (const id of [queueId, bdatId]) {
    const content = stored.get(id)!;
    const expectedField = `X-Body: ${Buffer.byteLength(text)} THE END\r\n`;
    assert.ok(content.startsWith(expectedField), `${id}: the check read the whole body from the file: ${content.slice(0, 60)}`);
    assert.match(content, /^X-Body: [^\r]*\r\nReceived: from client\.example/);
    assert.ok(content.endsWith(header + text), `${id}: header section and body stored byte for byte`);
  }
  await noBodyFilesLeft(server.spoolDir);
});

test('a client that disconnects mid-upload leaves no body file', async (t) => {
  const config = defaultConfig();
  config.domains.local = ['example.test'];
  const server = await startTestServer(config);
  t.after(server.stop);
  const c = await SmtpClient.connect(server.port);
  await c.expect('', 220, 'greeting');
  await c.expect('EHLO client.example\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n', 250);
  for (let i = 0; i < 3; i++) await c.reply();
  c.write(`Subject: x\r\n\r\n${bigBody(2_500_000)}`);
  for (let i = 0; i < 100 && (await bodyFiles(server.spoolDir)).length === 0; i++) await sleep(20);
  assert.equal((await bodyFiles(server.spoolDir)).length, 1, 'the body went to its file while it arrived');
  c.socket.destroy();
  await noBodyFilesLeft(server.spoolDir);
});
