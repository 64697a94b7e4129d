// Session machine unit tests: the two-state-types table (every row), the policy hook and its
// verdict log, timeouts, limits, and the envelope handed to the spool.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MachineDriver, testMachineConfig } from '../../test/helpers/drive.ts';
import { contentChunks } from '../message/accepted.ts';
import type { Output, PolicyVerdict } from './machine.ts';
import type { MachineConfig } from './machine-config.ts';
import { REPLY, formatReply, type Reply } from './replies.ts';
import type { PolicyStage } from './session.ts';

function config(over: Partial<MachineConfig> = {}): MachineConfig {
  return testMachineConfig(over);
}

function txnReady(d: MachineDriver): void {
  d.send('EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\n');
  assert.ok(d.machine.transaction !== null);
}

test('state table: RSET drops the transaction, keeps HELO, TLS, counters and verdicts', () => {
  const d = new MachineDriver(config());
  txnReady(d);
  const before = { ...d.machine.session!.counters };
  d.send('RSET\r\n');
  assert.equal(d.machine.transaction, null);
  assert.equal(d.machine.session!.helo?.name, 'c.example');
  assert.equal(d.machine.session!.counters.transactions, before.transactions);
  assert.equal(d.machine.session!.counters.recipients, before.recipients);
});

test('state table: end of data (accepted or refused) drops the transaction, keeps the rest', () => {
  const d = new MachineDriver(config());
  txnReady(d);
  const outs = d.step({ type: 'bytes', nowMs: 2, data: Buffer.from('DATA\r\nhi\r\n.\r\n') });
  assert.ok(outs.some((o) => o.type === 'commit'));
  d.step({ type: 'committed', nowMs: 3 });
  assert.equal(d.machine.transaction, null);
  assert.equal(d.machine.session!.helo?.name, 'c.example');
  assert.equal(d.machine.session!.counters.messages, 1);
  d.send('MAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\n');
  const r = d.send('DATA\r\nbare\nLF\r\n.\r\n');
  assert.match(r.at(-1)!, /^550 5\.6\.0/);
  assert.equal(d.machine.transaction, null);
  assert.equal(d.machine.session!.helo?.name, 'c.example');
});

test('state table: a second EHLO drops the transaction and replaces the HELO identity', () => {
  const d = new MachineDriver(config());
  txnReady(d);
  d.send('EHLO other.example\r\n');
  assert.equal(d.machine.transaction, null);
  assert.equal(d.machine.session!.helo?.name, 'other.example');
  assert.equal(d.machine.session!.counters.transactions, 1);
});

test('state table: STARTTLS clears the HELO identity, sets TLS, keeps counters and verdicts', () => {
  const d = new MachineDriver(config({ policyStages: new Set<PolicyStage>(['helo']) }));
  d.send('EHLO c.example\r\n');
  d.step({ type: 'verdict', nowMs: 1, verdict: { action: 'continue' } });
  d.send('FOO\r\n');
  const errors = d.machine.session!.counters.errors;
  const r = d.send('STARTTLS\r\n');
  assert.deepEqual(r, ['220 2.0.0 Ready to start TLS']);
  assert.ok(d.outputs.some((o) => o.type === 'start-tls'));
  d.step({ type: 'tls-ready', nowMs: 5, tls: { protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' } });
  assert.equal(d.machine.session!.tls?.protocol, 'TLSv1.3');
  assert.equal(d.machine.session!.helo, null);
  assert.equal(d.machine.session!.counters.errors, errors);
});

test('policy hook: the machine waits for the verdict and answers pipelined commands in order', () => {
  const d = new MachineDriver(config({ policyStages: new Set<PolicyStage>(['rcpt']) }));
  d.send('EHLO c.example\r\nMAIL FROM:<a@c.example>\r\n');
  const first = d.step({ type: 'bytes', nowMs: 5, data: Buffer.from('RCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nNOOP\r\n') });
  const asks = first.filter((o) => o.type === 'policy');
  assert.equal(asks.length, 1, 'one check outstanding at a time');
  assert.equal(first.filter((o) => o.type === 'reply').length, 0, 'nothing answered past the outstanding check');
  assert.equal(d.machine.isWaiting, true);
  const tempfail: PolicyVerdict = { action: 'tempfail', reply: REPLY.tooManyRecipients, check: 'test', reason: 'unit test' };
  const second = d.step({ type: 'verdict', nowMs: 6, verdict: tempfail });
  assert.deepEqual(second.filter((o) => o.type === 'reply').map((o) => (o as { reply: { code: number } }).reply.code), [452]);
  assert.equal(second.filter((o) => o.type === 'policy').length, 1, 'the next RCPT is checked');
  const third = d.step({ type: 'verdict', nowMs: 7, verdict: { action: 'continue' } });
  assert.deepEqual(third.filter((o) => o.type === 'reply').map((o) => (o as { reply: { code: number } }).reply.code), [250, 250]);
  assert.equal(d.machine.transaction!.recipients.length, 1);
  // The verdict is the session's: RSET does not clear it.
  d.send('RSET\r\n');
  assert.equal(d.machine.session!.verdicts.length, 1);
  assert.equal(d.machine.session!.verdicts[0].stage, 'rcpt');
});

test('policy hook: a disconnect verdict at connect answers and closes', () => {
  const d = new MachineDriver(config({ policyStages: new Set<PolicyStage>(['connect']) }), { isConnecting: false });
  const out = d.connect();
  assert.equal(out.filter((o) => o.type === 'reply').length, 0, 'no greeting before the verdict');
  const end = d.step({ type: 'verdict', nowMs: 1, verdict: { action: 'disconnect', reply: { code: 554, enhanced: '5.7.1', lines: ['No'] }, check: 't', reason: 'r' } });
  assert.deepEqual(end.map((o) => o.type).filter((t) => t !== 'log'), ['reply', 'close']);
  assert.equal(d.machine.phase, 'closed');
});

test('timeout: 421 4.4.2 and close', () => {
  const d = new MachineDriver(config());
  const out = d.step({ type: 'timeout', nowMs: 9 });
  assert.equal(formatReply((out.find((o) => o.type === 'reply') as { reply: Reply }).reply).trimEnd(), '421 4.4.2 Timeout, closing connection');
  assert.ok(out.some((o) => o.type === 'close'));
});

test('limits: transactions per session end with 421 4.7.0', () => {
  const d = new MachineDriver(config({ maxTransactions: 2 }));
  d.send('HELO c.example\r\n');
  d.send('MAIL FROM:<>\r\nRSET\r\nMAIL FROM:<>\r\nRSET\r\n');
  assert.deepEqual(d.send('MAIL FROM:<>\r\n'), ['421 4.7.0 Too many transactions in one session, closing connection']);
  assert.equal(d.machine.phase, 'closed');
});

test('limits: recipients past the maximum get 452 4.5.3 and do not count as errors', () => {
  const d = new MachineDriver(config({ maxRecipients: 2, maxErrors: 1 }));
  d.send('HELO c.example\r\nMAIL FROM:<>\r\n');
  const r = d.send('RCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\n');
  assert.deepEqual(r.map((x) => x.slice(0, 9)), ['250 2.1.5', '250 2.1.5', '452 4.5.3']);
  assert.equal(d.machine.phase, 'command');
});

test('limits: a data line over max_text_line_bytes is refused after the end of data', () => {
  const d = new MachineDriver(config());
  txnReady(d);
  const r = d.send(`DATA\r\n${'x'.repeat(999)}\r\n.\r\n`);
  assert.match(r.at(-1)!, /^550 5\.6\.0 .*line longer/);
  txnReady(d);
  const ok = d.send(`DATA\r\n${'x'.repeat(998)}\r\n.\r\n`);
  assert.equal(ok.at(-1), '354 End data with <CR><LF>.<CR><LF>');
  assert.ok(d.outputs.at(-1)!.type === 'commit');
});

test('envelope: DSN, SMTPUTF8, BODY and the Received header reach the spool', () => {
  const d = new MachineDriver(config());
  d.send('EHLO c.example\r\nMAIL FROM:<jörg@c.example> SMTPUTF8 BODY=8BITMIME RET=HDRS ENVID=X+2BY\r\n');
  d.send('RCPT TO:<alice@example.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;alice@example.test\r\n');
  const out = d.step({ type: 'bytes', nowMs: Date.UTC(2026, 10, 23, 10, 0, 0), data: Buffer.from('DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n') });
  const commit = out.find((o) => o.type === 'commit') as Extract<Output, { type: 'commit' }>;
  assert.ok(commit);
  const e = commit.message;
  assert.equal(e.reversePath, 'jörg@c.example');
  assert.equal(e.smtputf8, true);
  assert.equal(e.bodyType, '8BITMIME');
  assert.equal(e.ret, 'HDRS');
  assert.equal(e.envid, 'X+Y');
  assert.deepEqual(e.recipients, [{ address: 'alice@example.test', notify: ['FAILURE', 'DELAY'], orcpt: { addrType: 'rfc822', address: 'alice@example.test' } }]);
  const content = Buffer.concat(contentChunks(commit.message)).toString('utf8');
  assert.equal(e.size, Buffer.byteLength(content));
  assert.match(content, /^Received: from c\.example \(\[192\.0\.2\.1\]\)\r\n\tby mx\.example\.test \(Portcullis\) with UTF8SMTP id SID01\r\n\t\(session SID\)\r\n\tfor <alice@example\.test>; Mon, 23 Nov 2026 10:00:00 \+0000\r\nSubject: x\r\n\r\nbody\r\n$/);
  d.step({ type: 'commit-failed', nowMs: 1, reason: 'disk full' });
  assert.equal(d.machine.transaction, null, 'a failed commit drops the transaction');
});

test('commit failure answers 451 4.3.0 and the session goes on', () => {
  const d = new MachineDriver(config());
  txnReady(d);
  d.send('DATA\r\nx\r\n.\r\nNOOP\r\n');
  const out = d.step({ type: 'commit-failed', nowMs: 1, reason: 'EIO' });
  assert.deepEqual(out.filter((o) => o.type === 'reply').map((o) => formatReply((o as { reply: Reply }).reply).trimEnd()), ['451 4.3.0 Temporary failure storing the message, try again later', '250 2.0.0 Ok']);
});

test('half-close during a commit: the 250 and the pipelined QUIT are still answered', () => {
  const d = new MachineDriver(config());
  txnReady(d);
  d.send('DATA\r\n');
  d.step({ type: 'bytes', nowMs: 1, data: Buffer.from('hello\r\n.\r\nQUIT\r\n') });
  const ended = d.step({ type: 'end-of-input', nowMs: 2 });
  assert.ok(!ended.some((o) => o.type === 'close'), 'not closed while the commit is outstanding');
  const out = d.step({ type: 'committed', nowMs: 3 });
  const replies = out.filter((o) => o.type === 'reply').map((o) => formatReply((o as { reply: Reply }).reply).trimEnd());
  assert.deepEqual(replies.map((r) => r.slice(0, 3)), ['250', '221']);
  assert.ok(out.some((o) => o.type === 'close'));
});

test('half-close with a partial command: answered what was complete, then closed', () => {
  const d = new MachineDriver(config());
  d.send('NOOP\r\nNO');
  const out = d.step({ type: 'end-of-input', nowMs: 2 });
  assert.ok(out.some((o) => o.type === 'close'));
});

test('a connect-stage refusal leaves only QUIT usable (RFC 5321 3.1): 503 5.7.0 to the rest (issue 11)', () => {
  const d = new MachineDriver(config({ policyStages: new Set<PolicyStage>(['connect']) }));
  d.step({ type: 'verdict', nowMs: 1, verdict: { action: 'reject', reply: { code: 554, enhanced: '5.7.1', lines: ['No service'] }, check: 't', reason: 'r' } });
  const out = d.step({ type: 'bytes', nowMs: 2, data: Buffer.from('EHLO c.example\r\nMAIL FROM:<>\r\nQUIT\r\n') });
  const replies = out.filter((o) => o.type === 'reply').map((o) => formatReply((o as { reply: Reply }).reply));
  assert.deepEqual(replies.map((r) => r.slice(0, 9)), ['503 5.7.0', '503 5.7.0', '221 2.0.0']);
});

test('pregreet, then a connect-stage refusal: the begun greeting ends with 220, the refusal answers each command (RFC 5321 4.2.1)', () => {
  const cfg = config({ policyStages: new Set<PolicyStage>(['connect']), refusedSession: { maxMs: 10_000, maxCommands: 5 } });
  const connected = (d: MachineDriver): Output[] => d.step({ type: 'connected', nowMs: 1, sessionId: 'S', peer: { address: '192.0.2.1', port: 1 }, local: { address: '127.0.0.1', port: 25 }, isRelayClient: false, isGreetingBegun: true });
  const refusal = { code: 554, enhanced: '5.7.1', lines: ['Listed'] };
  const d = new MachineDriver(cfg, { isConnecting: false });
  connected(d);
  const out = d.step({ type: 'verdict', nowMs: 2, verdict: { action: 'reject', reply: refusal, check: 't', reason: 'r' } });
  const wire = (o: Output[]): string[] => o.filter((x) => x.type === 'reply').map((x) => formatReply((x as { reply: Reply }).reply));
  assert.deepEqual(wire(out), [formatReply(REPLY.greeting(cfg.hostname))]);
  assert.ok(out.some((o) => o.type === 'refused-mode'), 'the shell is asked to hold it under the cap');
  assert.deepEqual(d.send('EHLO c.example\r\nMAIL FROM:<>\r\nQUIT\r\n'), ['554 5.7.1 Listed', '554 5.7.1 Listed', '221 2.0.0 Bye']);
  // A 421 goes out at once after the greeting (RFC 5321 3.8), and the session ends.
  const t = new MachineDriver(cfg, { isConnecting: false });
  connected(t);
  const tempfail = t.step({ type: 'verdict', nowMs: 2, verdict: { action: 'disconnect', reply: { code: 421, enhanced: '4.7.1', lines: ['Later'] }, check: 't', reason: 'r' } });
  assert.deepEqual(wire(tempfail), [formatReply(REPLY.greeting(cfg.hostname)), '421 4.7.1 Later\r\n']);
  assert.equal(t.machine.phase, 'closed');
});

test('security: a BDAT line that does not parse ends the session (the chunk boundary is unknown)', () => {
  const d = new MachineDriver(config());
  txnReady(d);
  const r = d.send('BDAT 75\tLAST\r\nRSET\r\nMAIL FROM:<ceo@example.test>\r\n');
  assert.deepEqual(r, ['421 4.5.0 Malformed BDAT: chunk boundary unknown, closing connection']);
  assert.equal(d.machine.phase, 'closed');
});

test('RFC 5321 4.5.3.1.6: the stuffing dot does not count toward the 1000-octet line limit', () => {
  const d = new MachineDriver(config());
  txnReady(d);
  d.send(`DATA\r\n..${'x'.repeat(997)}\r\n.\r\n`);
  assert.equal(d.outputs.at(-1)!.type, 'commit');
});

test('normalize mode: LF-only lines are lines for the length limit', () => {
  const d = new MachineDriver(config({ isNormalizingBareLineEndings: true }));
  txnReady(d);
  d.send(`DATA\r\n${'line of text\n'.repeat(200)}\r\n.\r\n`);
  assert.equal(d.outputs.at(-1)!.type, 'commit');
});

test('security: tiny pieces (dot-stuffed short lines, 1-octet BDAT chunks) are coalesced', () => {
  const d = new MachineDriver(config());
  txnReady(d);
  d.send(`DATA\r\n${'..\r\n'.repeat(50_000)}.\r\n`);
  const commit = d.outputs.at(-1) as Extract<Output, { type: 'commit' }>;
  assert.equal(commit.type, 'commit');
  const pieces = contentChunks(commit.message);
  assert.ok(pieces.length < 10, `${pieces.length} pieces for 150,000 octets`);
  assert.equal(Buffer.concat(pieces.slice(1)).toString(), '.\r\n'.repeat(50_000));
  d.step({ type: 'committed', nowMs: 9 });
  d.send('MAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\n');
  const content = 'ab\r\n'.repeat(1250);
  d.send(`${Array.from(content, (c) => `BDAT 1\r\n${c}`).join('')}BDAT 0 LAST\r\n`);
  const bdat = d.outputs.at(-1) as Extract<Output, { type: 'commit' }>;
  assert.equal(bdat.type, 'commit');
  const bdatPieces = contentChunks(bdat.message);
  assert.ok(bdatPieces.length < 10, `${bdatPieces.length} pieces for 5,000 one-octet chunks`);
  assert.equal(Buffer.concat(bdatPieces.slice(1)).toString(), content);
});

test('RFC 3030: chunks pipelined after a refused BDAT chunk get the refusal, not an error each', () => {
  const d = new MachineDriver(config({ maxMessageBytes: 10, maxErrors: 3 }));
  txnReady(d);
  const chunk = 'BDAT 8\r\n12345678';
  const r = d.send(`${chunk}${chunk}${chunk}${chunk}${chunk}BDAT 2 LAST\r\nxy`);
  assert.deepEqual(r.map((x) => x.slice(0, 9)), ['250 2.0.0', '552 5.3.4', '552 5.3.4', '552 5.3.4', '552 5.3.4', '552 5.3.4']);
  assert.equal(d.machine.phase, 'command', 'one refused message is one error');
  assert.deepEqual(d.send('BDAT 1 LAST\r\nx'), ['503 5.5.1 Need MAIL command']);
});

test('spool below its free-space floor: MAIL gets 452 4.3.1 (not counted as an error) until space returns', () => {
  const d = new MachineDriver(config({ maxErrors: 2 }));
  d.send('EHLO c.example\r\n');
  d.step({ type: 'spool-space', nowMs: d.tick(), isLow: true });
  assert.deepEqual(d.send('MAIL FROM:<a@c.example>\r\n'), ['452 4.3.1 Insufficient system storage, try again later']);
  assert.deepEqual(d.send('MAIL FROM:<a@c.example>\r\n'), ['452 4.3.1 Insufficient system storage, try again later']);
  assert.equal(d.machine.session!.counters.errors, 0);
  assert.equal(d.machine.transaction, null);
  d.step({ type: 'spool-space', nowMs: d.tick(), isLow: false });
  assert.deepEqual(d.send('MAIL FROM:<a@c.example>\r\n'), ['250 2.1.0 Sender ok']);
});

test('content stage: header fields a content check returns as `headers` are stored (as add edits)', () => {
  const d = new MachineDriver(config({ policyStages: new Set<PolicyStage>(['content']) }), {
    policy: (r) => (r.stage === 'content' ? { action: 'continue', headers: ['X-Spam: yes'], edits: { headers: [{ op: 'add', field: 'X-Second: 1' }] } } : { action: 'continue' }),
    commits: 'accept',
  });
  txnReady(d);
  assert.match(d.send('DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n').at(-1)!, /^250 2\.0\.0 Ok: queued/);
  assert.match(d.stored[0].toString('latin1'), /^X-Second: 1\r\nX-Spam: yes\r\nReceived: /);
});

test('pipelining: one read of 8,192 EHLOs is answered a batch at a time, each batch after output-drained', () => {
  const d = new MachineDriver(config());
  const read = Buffer.from('EHLO a\r\n'.repeat(8192)); // 64 KiB: one socket read
  const replyBytes = (outs: Output[]): number => outs.reduce((n, o) => n + (o.type === 'reply' ? formatReply(o.reply).length : 0), 0);
  const replies = (outs: Output[]): number => outs.filter((o) => o.type === 'reply').length;
  // Straight on the machine (the driver would step output-drained itself).
  let outs = d.machine.step({ type: 'bytes', nowMs: d.tick(), data: read });
  let answered = replies(outs);
  // Before the cap the whole read was answered in one step: 8,192 replies, 1.2 MB queued at once.
  assert.ok(replyBytes(outs) <= 8 * 1024, `one batch is ${replyBytes(outs)} octets`);
  assert.ok(d.machine.isHeldForOutput);
  // More input while held is only buffered.
  assert.equal(replies(d.machine.step({ type: 'bytes', nowMs: d.tick(), data: Buffer.from('NOOP\r\n') })), 0);
  for (let i = 0; i < 10_000 && d.machine.isHeldForOutput; i++) {
    outs = d.machine.step({ type: 'output-drained', nowMs: d.tick() });
    assert.ok(replyBytes(outs) <= 8 * 1024);
    answered += replies(outs);
  }
  assert.equal(d.machine.isHeldForOutput, false);
  assert.equal(answered, 8192 + 1, 'every command answered once, the NOOP last');
  assert.equal(formatReply(outs.filter((o) => o.type === 'reply').at(-1)!.reply), formatReply(REPLY.ok));
});
