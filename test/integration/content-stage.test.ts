// The content stage over a real socket: a small content check sees the assembled message
// (parsed header fields, the body as a stream) and refuses one Subject or edits the message; the
// machine applies the edits before commit. Exercised on the second message of a session after
// RSET, on a pipelined message and on BDAT messages; plus the transform step before commit.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { defaultConfig } from '../../src/config/types.ts';
import type { Check } from '../../src/policy/check.ts';
import { PolicyPipeline } from '../../src/policy/pipeline.ts';
import { reply } from '../../src/protocol/replies.ts';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';
import { startTestServer } from '../helpers/server.ts';

const FORBIDDEN = 'Buy cheap watches';

/** Refuses Subject FORBIDDEN; on other messages adds a field with the body's octet count (read as a
 *  stream), changes the Subject, drops X-Drop-Me, and removes the recipient drop@example.test. */
const subjectCheck: Check = {
  name: 'subject',
  stages: ['content'],
  async run(ctx) {
    const m = ctx.message;
    if (m === null) throw new Error('content stage without a message');
    if (m.header('subject') === FORBIDDEN) return { action: 'reject', reply: reply(550, '5.7.1', 'Message content refused'), check: 'subject', reason: 'forbidden subject' };
    let octets = 0;
    for await (const chunk of m.body()) octets += chunk.length;
    return {
      action: 'continue',
      edits: {
        headers: [
          { op: 'add', field: `X-Body-Octets: ${octets}` },
          { op: 'change', name: 'Subject', index: 1, value: `[checked] ${m.header('subject') ?? ''}` },
          { op: 'delete', name: 'X-Drop-Me', index: 1 },
        ],
        recipients: [{ op: 'delete', address: 'drop@example.test' }],
        ...(m.header('x-quarantine') !== null ? { quarantine: 'test' } : {}),
      },
    };
  },
};

function message(subject: string, extra = ''): string {
  return `Subject: ${subject}\r\nX-Drop-Me: yes\r\n${extra}\r\nHello.\r\n`;
}

async function start(t: { after: (fn: () => Promise<void>) => void }, transform?: (m: import('../../src/message/accepted.ts').AcceptedMessage) => Promise<import('../../src/message/accepted.ts').AcceptedMessage>) {
  const config = defaultConfig();
  config.domains.local = ['example.test'];
  config.smtp.hostname = 'mx.example.test';
  // Three refusals in one session would otherwise end it (verdicts.max_refusals_per_session).
  config.verdicts.maxRefusalsPerSession = 10;
  const pipeline = new PolicyPipeline([subjectCheck], { log: pino({ level: 'silent' }), defaultTimeoutMs: 5000 });
  const server = await startTestServer(config, { policy: pipeline, ...(transform !== undefined ? { transform } : {}) });
  t.after(server.stop);
  return server;
}

async function stored(spoolDir: string): Promise<Map<string, { content: string; recipients: string[]; quarantine?: string }>> {
  const out = new Map<string, { content: string; recipients: string[]; quarantine?: string }>();
  for await (const e of scanSpool(spoolDir)) {
    const m = await readMessage(spoolDir, e.envelope.queueId, e.location);
    assert.ok(m !== null);
    out.set(e.envelope.queueId, { content: m.content.toString('latin1'), recipients: e.envelope.recipients.map((r) => r.address), ...(e.envelope.quarantine !== undefined ? { quarantine: e.envelope.quarantine } : {}) });
  }
  return out;
}

function queueIdOf(text: string): string {
  const m = /queued as (\S+)/.exec(text);
  assert.ok(m, text);
  return m[1];
}

test('content stage over a socket: refused by Subject after RSET, pipelined, and with BDAT; edits applied before commit', async (t) => {
  const server = await start(t);
  const c = await SmtpClient.connect(server.port);
  t.after(() => c.close());
  await c.expect('', 220, 'greeting');
  await c.expect('EHLO client.example\r\n', 250);
  // 1: accepted and edited.
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  await c.expect('RCPT TO:<alice@example.test>\r\n', 250);
  await c.expect('RCPT TO:<drop@example.test>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  const first = queueIdOf((await c.expect(`${message('Hi')}.\r\n`, 250)).text);
  // 2: after RSET, the second message of the session is refused by its Subject.
  await c.expect('RSET\r\n', 250);
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  await c.expect('RCPT TO:<alice@example.test>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  const refused = await c.expect(`${message(FORBIDDEN)}.\r\n`, 550);
  assert.equal(refused.text, '550 5.7.1 Message content refused');
  // 3: pipelined (one write), refused; 4: pipelined, accepted.
  c.write(`MAIL FROM:<a@client.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n${message(FORBIDDEN)}.\r\n`);
  assert.deepEqual([(await c.reply())?.code, (await c.reply())?.code, (await c.reply())?.code, (await c.reply())?.text], [250, 250, 354, '550 5.7.1 Message content refused']);
  c.write(`MAIL FROM:<a@client.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n${message('Pipelined', 'X-Quarantine: 1\r\n')}.\r\n`);
  assert.deepEqual([(await c.reply())?.code, (await c.reply())?.code, (await c.reply())?.code], [250, 250, 354]);
  const pipelined = queueIdOf((await c.reply())!.text);
  // 5: BDAT, refused; 6: BDAT in two chunks, accepted.
  const bad = message(FORBIDDEN);
  c.write(`MAIL FROM:<a@client.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT ${bad.length} LAST\r\n${bad}`);
  assert.deepEqual([(await c.reply())?.code, (await c.reply())?.code, (await c.reply())?.text], [250, 250, '550 5.7.1 Message content refused']);
  const good = message('Chunked');
  const half = Math.floor(good.length / 2);
  c.write(`MAIL FROM:<a@client.example>\r\nRCPT TO:<alice@example.test>\r\nBDAT ${half}\r\n${good.slice(0, half)}BDAT ${good.length - half} LAST\r\n${good.slice(half)}`);
  assert.deepEqual([(await c.reply())?.code, (await c.reply())?.code, (await c.reply())?.code], [250, 250, 250]);
  const chunked = queueIdOf((await c.reply())!.text);
  await c.expect('QUIT\r\n', 221);

  const messages = await stored(server.spoolDir);
  assert.deepEqual([...messages.keys()].sort(), [first, pipelined, chunked].sort(), 'only the accepted messages are stored');
  for (const [id, m] of messages) {
    assert.match(m.content, /^X-Body-Octets: 8\r\nReceived: from client\.example/, `${id}: the added field is above the rest, with the body's octets`);
    assert.match(m.content, /\r\nSubject: \[checked\] (Hi|Pipelined|Chunked)\r\n/, `${id}: Subject changed in place`);
    assert.doesNotMatch(m.content, /X-Drop-Me/, `${id}: field deleted`);
    assert.match(m.content, /\r\n\r\nHello\.\r\n$/, `${id}: body unchanged`);
  }
  assert.deepEqual(messages.get(first)!.recipients, ['alice@example.test'], 'recipient removed by the content check');
  assert.equal(messages.get(pipelined)!.quarantine, 'test', 'quarantine tag stored');
  assert.equal(messages.get(first)!.quarantine, undefined);
});

test('content stage over a socket: a check that removes every recipient discards the message (250, nothing stored)', async (t) => {
  const server = await start(t);
  const c = await SmtpClient.connect(server.port);
  t.after(() => c.close());
  await c.expect('', 220, 'greeting');
  await c.expect('EHLO client.example\r\n', 250);
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  await c.expect('RCPT TO:<drop@example.test>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  assert.equal((await c.expect(`${message('Hi')}.\r\n`, 250)).text, '250 2.0.0 Ok: message discarded');
  await c.expect('QUIT\r\n', 221);
  assert.equal((await stored(server.spoolDir)).size, 0);
});

test('transform step over a socket: runs after the content edits and before commit; a failing transform is a 451', async (t) => {
  let calls = 0;
  const server = await start(t, async (m) => {
    calls++;
    if (m.recipients.some((r) => r.address === 'fail@example.test')) throw new Error('signing key unavailable');
    return { ...m, head: [Buffer.from('X-Transformed: yes\r\n'), ...m.head], size: m.size + 'X-Transformed: yes\r\n'.length };
  });
  const c = await SmtpClient.connect(server.port);
  t.after(() => c.close());
  await c.expect('', 220, 'greeting');
  await c.expect('EHLO client.example\r\n', 250);
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  await c.expect('RCPT TO:<alice@example.test>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  const id = queueIdOf((await c.expect(`${message('Hi')}.\r\n`, 250)).text);
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  await c.expect('RCPT TO:<fail@example.test>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  assert.equal((await c.expect(`${message('Hi')}.\r\n`, 451)).text, '451 4.3.0 Temporary local problem, try again later');
  await c.expect('QUIT\r\n', 221);
  assert.equal(calls, 2);
  const messages = await stored(server.spoolDir);
  assert.deepEqual([...messages.keys()], [id]);
  assert.match(messages.get(id)!.content, /^X-Transformed: yes\r\nX-Body-Octets: 8\r\nReceived: /);
});
