// Verdict memory over a real socket: the seed report's transcript (a DATA-time greylist
// tempfail, RSET, a second transaction from another sender to the same recipient) is refused
// again, through the real connection, pipeline and spool.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { defaultConfig } from '../../src/config/types.ts';
import type { Check } from '../../src/policy/check.ts';
import { PolicyPipeline } from '../../src/policy/pipeline.ts';
import { reply } from '../../src/protocol/replies.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';
import { startTestServer } from '../helpers/server.ts';
import { runSocket } from '../helpers/socket-runner.ts';
import { parseTranscript } from '../helpers/transcript.ts';

const SEED = `
S: 220 *
C: EHLO spam.example
S: 250-*
S: 250-*
S: 250-*
S: 250-*
S: 250-*
S: 250-*
S: 250-*
S: 250-*
S: 250 *
C: MAIL FROM:<first@spam.example>
S: 250 2.1.0 Sender ok
C: RCPT TO:<alice@example.test>
S: 250 2.1.5 Recipient ok
C: DATA
S: 354 *
C: Subject: one
C:
C: buy now
C: .
S: 451 4.7.1 Greylisted, try again later
C: RSET
S: 250 2.0.0 Reset
C: MAIL FROM:<second@other.example>
S: 250 2.1.0 Sender ok
C: RCPT TO:<alice@example.test>
S: 250 2.1.5 Recipient ok
C: DATA
S: 354 *
C: Subject: two
C:
C: buy now
C: .
S: 451 4.7.1 Greylisted, try again later
@spool-count 0
C: QUIT
S: 221 *
`;

test('rset-launders-greylist (seed report, DATA stage) is refused over a real socket', async (t) => {
  // Tempfail on the first call only: the second 451 must come from verdict memory (a stub that
  // refused every call would pass with memory switched off).
  let calls = 0;
  const greylist: Check = {
    name: 'greylist',
    stages: ['data'],
    run: () =>
      calls++ === 0
        ? { action: 'tempfail', reply: reply(451, '4.7.1', 'Greylisted, try again later'), check: 'greylist', reason: 'new triplet' }
        : { action: 'continue' },
  };
  const pipeline = new PolicyPipeline([greylist], { log: pino({ level: 'silent' }), defaultTimeoutMs: 1000 });
  const transcript = parseTranscript('rset-launders-greylist', SEED);
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  cfg.smtp.hostname = 'mx.example.test';
  const server = await startTestServer(cfg, { policy: pipeline });
  t.after(() => server.stop());
  await runSocket(transcript, server.port, server.spoolDir);
  assert.equal(calls, 1, 'the second transaction got the remembered verdict without the check running');
});

/** Writes `data` in one piece after the greeting and EHLO; returns every reply's last line until `count` replies or the close. */
async function pipelined(port: number, data: string, count: number): Promise<{ replies: string[]; isClosed: boolean }> {
  const c = await SmtpClient.connect(port);
  try {
    assert.equal((await c.reply())?.code, 220);
    await c.expect('EHLO c.example\r\n', 250);
    c.write(data);
    const replies: string[] = [];
    while (replies.length < count) {
      const r = await c.reply();
      if (r === null) break;
      replies.push(r.last);
    }
    return { replies, isClosed: await c.waitClosed(2_000) };
  } finally {
    c.close();
  }
}

const PIPELINED =
  'MAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\n' +
  'Subject: x\r\n\r\nhi\r\n.\r\nMAIL FROM:<b@c.example>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\nQUIT\r\n';
const PIPELINED_REPLIES = [
  '250 2.1.0 Sender ok',
  '250 2.1.5 Recipient ok',
  '550 5.1.1 No such user here',
  '250 2.1.5 Recipient ok',
  '354 End data with <CR><LF>.<CR><LF>',
  '250 2.0.0 Ok: queued as *',
  '250 2.1.0 Sender ok',
  '550 5.1.1 No such user here',
  '250 2.1.5 Recipient ok',
  '221 2.0.0 Bye',
];

for (const variant of ['synchronous', 'mixed'] as const) {
  test(`pipelined commands whose checks answer ${variant === 'synchronous' ? 'synchronously' : 'partly asynchronously'}: every reply in order over a real socket`, async (t) => {
    const calls: string[] = [];
    const denyBob: Check = {
      name: 'deny-bob',
      stages: ['rcpt'],
      run: (ctx) => {
        calls.push(`rcpt ${ctx.recipient!.address}`);
        return ctx.recipient!.address.startsWith('bob@') ? { action: 'reject', reply: reply(550, '5.1.1', 'No such user here'), check: 'deny-bob', reason: 'test' } : { action: 'continue' };
      },
    };
    // The mixed variant: the MAIL stage's check answers after a turn of the event loop.
    const atMail: Check = {
      name: 'at-mail',
      stages: ['mail'],
      run: () => {
        calls.push('mail');
        return variant === 'synchronous' ? { action: 'continue' } : new Promise((resolve) => setImmediate(() => resolve({ action: 'continue' })));
      },
    };
    const pipeline = new PolicyPipeline([atMail, denyBob], { log: pino({ level: 'silent' }), defaultTimeoutMs: 1000 });
    const cfg = defaultConfig();
    cfg.domains.local = ['example.test'];
    cfg.smtp.hostname = 'mx.example.test';
    const server = await startTestServer(cfg, { policy: pipeline });
    t.after(() => server.stop());
    const { replies } = await pipelined(server.port, PIPELINED, PIPELINED_REPLIES.length);
    assert.deepEqual(replies.map((r) => r.replace(/queued as \S+/, 'queued as *')), PIPELINED_REPLIES);
    assert.deepEqual(calls, ['mail', 'rcpt alice@example.test', 'rcpt bob@example.test', 'rcpt carol@example.test', 'mail', 'rcpt alice@example.test']);
  });
}

for (const how of ['synchronously', 'asynchronously'] as const) {
  test(`a policy runner that throws ${how} (our bug, not a check's) ends that session with 421 4.3.0`, async (t) => {
    const pipeline = new PolicyPipeline([{ name: 'c', stages: ['rcpt'], run: () => ({ action: 'continue' }) }], { log: pino({ level: 'silent' }), defaultTimeoutMs: 1000 });
    // The runner itself fails (as a bug in the pipeline would), before any check runs.
    const broken = Object.create(pipeline) as PolicyPipeline;
    Object.defineProperty(broken, 'run', {
      value: how === 'synchronously' ? () => { throw new Error('bug'); } : () => Promise.reject(new Error('bug')),
    });
    const cfg = defaultConfig();
    cfg.domains.local = ['example.test'];
    const server = await startTestServer(cfg, { policy: broken });
    t.after(() => server.stop());
    const { replies, isClosed } = await pipelined(server.port, 'MAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nNOOP\r\n', 3);
    assert.deepEqual(replies, ['250 2.1.0 Sender ok', '421 4.3.0 Internal error, closing connection']);
    assert.ok(isClosed);
  });
}
