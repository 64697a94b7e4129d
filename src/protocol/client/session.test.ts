// The client session machine, driven with scripted server bytes: EHLO/HELO/LHLO, STARTTLS,
// PIPELINING, BDAT, SIZE/SMTPUTF8/8BITMIME refusals, DSN parameters, LMTP's reply per
// recipient, RSET before reuse, and trouble (timeouts, closes) as deferred results.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ClientSession, RFC_5321_TIMEOUTS, type ClientConfig, type ClientJob, type ClientOutput, type ClientResult } from './session.ts';

const SEED = 2920_3030;

function config(over: Partial<ClientConfig> = {}): ClientConfig {
  return { protocol: 'smtp', heloName: 'out.example.test', tls: 'none', canStartTls: true, eightBitToSevenBitPeer: 'send', timeouts: RFC_5321_TIMEOUTS, ...over };
}

function job(over: Partial<ClientJob> = {}): ClientJob {
  return { reversePath: 's@example.org', recipients: [{ address: 'a@example.test' }, { address: 'b@example.test' }], bodyType: '7BIT', smtputf8: false, size: 100, ...over };
}

const EHLO_FULL = '250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n';

/** Drives a session: server bursts in order (each may be cut anywhere), answering the session's
 *  actions as a shell would. Returns what was sent, the results and every output. */
function drive(cfg: ClientConfig, jobs: ClientJob[], bursts: string[], cuts: number[] = []): { sent: string; results: ClientResult[][]; outputs: ClientOutput[] } {
  const s = new ClientSession(cfg);
  const outputs: ClientOutput[] = [...s.start()];
  let sent = '';
  const results: ClientResult[][] = [];
  let pending = [...jobs];
  const react = (out: ClientOutput[]): void => {
    for (const o of out) {
      outputs.push(o);
      if (o.type === 'send') sent += o.data;
      else if (o.type === 'results') results.push(o.results);
      else if (o.type === 'start-tls') {
        sent += '<TLS>';
        queueMicro.push({ type: 'tls-ready' });
      } else if (o.type === 'send-content') {
        sent += `<CONTENT ${o.mode}>`;
        queueMicro.push({ type: 'content-sent', bdatChunks: o.mode === 'bdat' ? 1 : 0 });
      }
      if ((o.type === 'ready' || o.type === 'results') && pending.length > 0 && !s.isClosed) {
        const j = pending[0];
        pending = pending.slice(1);
        queueMicro.push({ type: 'transaction', job: j });
      }
    }
  };
  const queueMicro: Parameters<ClientSession['step']>[0][] = [];
  const flush = (): void => {
    while (queueMicro.length > 0) react(s.step(queueMicro.shift()!));
  };
  let cutIndex = 0;
  for (const burst of bursts) {
    const buf = Buffer.from(burst);
    const n = cuts.length > 0 ? (cuts[cutIndex++ % cuts.length] % (buf.length + 1)) : buf.length;
    for (const piece of n > 0 && n < buf.length ? [buf.subarray(0, n), buf.subarray(n)] : [buf]) {
      react(s.step({ type: 'bytes', data: piece }));
      flush();
    }
  }
  return { sent, results, outputs };
}

test('pipelined: MAIL, every RCPT and DATA in one write (RFC 2920), per-recipient results', () => {
  const r = drive(config(), [job({ recipients: [{ address: 'a@example.test' }, { address: 'x@example.test' }, { address: 'b@example.test' }] })], [
    '220 mx.example.test ESMTP\r\n',
    EHLO_FULL,
    '250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n354 go\r\n',
    '250 2.0.0 queued as X\r\n',
  ]);
  const sends = r.outputs.filter((o) => o.type === 'send').map((o) => (o as { data: string }).data);
  assert.deepEqual(sends, ['EHLO out.example.test\r\n', 'MAIL FROM:<s@example.org> SIZE=100\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<x@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n']);
  assert.deepEqual(r.results[0].map((x) => [x.status, x.reply.enhanced]), [['delivered', '2.0.0'], ['failed', '5.1.1'], ['delivered', '2.0.0']]);
});

test('EHLO refused with 5xx falls back to HELO; without PIPELINING each RCPT waits for its reply', () => {
  const r = drive(config(), [job()], ['220 old\r\n', '502 5.5.1 what\r\n', '250 old\r\n', '250 ok\r\n', '250 ok\r\n', '450 4.2.0 later\r\n', '354 go\r\n', '250 ok\r\n']);
  assert.equal(r.sent, 'EHLO out.example.test\r\nHELO out.example.test\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n<CONTENT data>');
  assert.deepEqual(r.results[0].map((x) => x.status), ['delivered', 'deferred']);
});

test('a 4xx greeting is a session failure (the courier tries the next host); nothing but QUIT is sent', () => {
  const r = drive(config(), [job()], ['421 4.3.2 busy\r\n']);
  const f = r.outputs.find((o) => o.type === 'session-failed');
  assert.ok(f !== undefined && f.type === 'session-failed' && f.stage === 'greeting' && f.reply.code === 421);
  assert.equal(r.sent, 'QUIT\r\n');
});

test('Security: tls = "required" and no STARTTLS offered: session failed 4.7.10, no envelope in the clear', () => {
  const r = drive(config({ tls: 'required' }), [job()], ['220 mx\r\n', '250-mx\r\n250 PIPELINING\r\n']);
  const f = r.outputs.find((o) => o.type === 'session-failed');
  assert.ok(f !== undefined && f.type === 'session-failed' && f.stage === 'tls' && f.reply.enhanced === '4.7.10' && f.reply.code < 500);
  assert.ok(!r.sent.includes('MAIL'));
});

test('STARTTLS when offered, then EHLO again; opportunistic goes on in the clear when STARTTLS is refused', () => {
  const r = drive(config({ tls: 'opportunistic' }), [job({ recipients: [{ address: 'a@example.test' }] })], ['220 mx\r\n', '250-mx\r\n250 STARTTLS\r\n', '220 go ahead\r\n', '250-mx\r\n250 PIPELINING\r\n', '250 ok\r\n250 ok\r\n', '354 go\r\n', '250 ok\r\n']);
  assert.ok(r.sent.startsWith('EHLO out.example.test\r\nSTARTTLS\r\n<TLS>EHLO out.example.test\r\nMAIL FROM'));
  assert.equal(r.results[0][0].status, 'delivered');
  const r2 = drive(config({ tls: 'opportunistic' }), [job({ recipients: [{ address: 'a@example.test' }] })], ['220 mx\r\n', '250-mx\r\n250 STARTTLS\r\n', '454 4.7.0 no tls today\r\n', '250 ok\r\n', '250 ok\r\n', '354 go\r\n', '250 ok\r\n']);
  assert.equal(r2.results[0][0].status, 'delivered');
});

test('Security: a reply injected after the STARTTLS 220 (in the same read) ends the session', () => {
  const r = drive(config({ tls: 'opportunistic' }), [job()], ['220 mx\r\n', '250-mx\r\n250 STARTTLS\r\n', '220 go\r\n250 injected\r\n']);
  assert.ok(r.outputs.some((o) => o.type === 'session-failed'));
  assert.ok(!r.sent.includes('MAIL'));
});

test('SIZE: a message over the peer\'s limit fails 5.3.4 before MAIL; SMTPUTF8 to a peer without it fails 5.6.7', () => {
  const big = drive(config(), [job({ size: 1001 })], ['220 mx\r\n', EHLO_FULL]);
  assert.deepEqual(big.results[0].map((x) => [x.status, x.reply.enhanced]), [['failed', '5.3.4'], ['failed', '5.3.4']]);
  assert.ok(!big.sent.includes('MAIL'));
  const utf8 = drive(config(), [job({ smtputf8: true })], ['220 mx\r\n', '250-mx\r\n250 PIPELINING\r\n']);
  assert.deepEqual(utf8.results[0].map((x) => [x.status, x.reply.enhanced]), [['failed', '5.6.7'], ['failed', '5.6.7']]);
});

test('8BITMIME: BODY=8BITMIME when offered; to a peer without it sent as is by default, or failed 5.6.3 by option', () => {
  const offered = drive(config(), [job({ bodyType: '8BITMIME' })], ['220 mx\r\n', EHLO_FULL]);
  assert.ok(offered.sent.includes('MAIL FROM:<s@example.org> SIZE=100 BODY=8BITMIME\r\n'));
  const plain = drive(config(), [job({ bodyType: '8BITMIME' })], ['220 mx\r\n', '250-mx\r\n250 PIPELINING\r\n', '250 ok\r\n250 ok\r\n250 ok\r\n', '354 go\r\n', '250 ok\r\n']);
  assert.ok(plain.sent.includes('MAIL FROM:<s@example.org>\r\n'));
  assert.equal(plain.results[0][0].status, 'delivered');
  const strict = drive(config({ eightBitToSevenBitPeer: 'fail' }), [job({ bodyType: '8BITMIME' })], ['220 mx\r\n', '250-mx\r\n250 PIPELINING\r\n']);
  assert.equal(strict.results[0][0].reply.enhanced, '5.6.3');
});

test('DSN: NOTIFY, ORCPT, RET and ENVID go to a peer with DSN; without DSN they are dropped and SUCCESS means relayed', () => {
  const j = job({ ret: 'HDRS', envid: 'E1', recipients: [{ address: 'a@example.test', notify: ['SUCCESS'], orcpt: { addrType: 'rfc822', address: 'A@example.test' } }, { address: 'b@example.test', notify: ['FAILURE'] }] });
  const withDsn = drive(config(), [j], ['220 mx\r\n', EHLO_FULL, '250 ok\r\n250 ok\r\n250 ok\r\n', '354 go\r\n', '250 ok\r\n']);
  assert.ok(withDsn.sent.includes('MAIL FROM:<s@example.org> SIZE=100 RET=HDRS ENVID=E1\r\nRCPT TO:<a@example.test> NOTIFY=SUCCESS ORCPT=rfc822;A@example.test\r\nRCPT TO:<b@example.test> NOTIFY=FAILURE\r\n'));
  assert.deepEqual(withDsn.results[0].map((x) => x.status), ['delivered', 'delivered']);
  const noDsn = drive(config(), [j], ['220 mx\r\n', '250-mx\r\n250 PIPELINING\r\n', '250 ok\r\n250 ok\r\n250 ok\r\n', '354 go\r\n', '250 ok\r\n']);
  assert.ok(noDsn.sent.includes('MAIL FROM:<s@example.org>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n'));
  assert.deepEqual(noDsn.results[0].map((x) => x.status), ['relayed', 'delivered']);
});

test('LMTP: LHLO, and one reply per accepted recipient after the data, each honoured on its own', () => {
  const j = job({ recipients: [{ address: 'a@example.test' }, { address: 'x@example.test' }, { address: 'b@example.test' }, { address: 'c@example.test' }] });
  const r = drive(config({ protocol: 'lmtp' }), [j], ['220 lmtp\r\n', '250-lmtp\r\n250-PIPELINING\r\n250 CHUNKING\r\n', '250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n250 ok\r\n250 ok\r\n', '354 go\r\n', '250 2.0.0 a saved\r\n452 4.2.2 b over quota\r\n552 5.2.2 c over quota\r\n']);
  assert.ok(r.sent.startsWith('LHLO out.example.test\r\n'));
  assert.ok(r.sent.includes('DATA\r\n<CONTENT data>'), 'LMTP uses DATA');
  assert.deepEqual(r.results[0].map((x) => [x.status, x.reply.code]), [['delivered', 250], ['failed', 550], ['deferred', 452], ['failed', 552]]);
});

test('LMTP: a connection lost after some per-recipient replies defers only the rest', () => {
  const s = new ClientSession(config({ protocol: 'lmtp' }));
  s.start();
  s.step({ type: 'bytes', data: Buffer.from('220 l\r\n') });
  s.step({ type: 'bytes', data: Buffer.from('250-l\r\n250 PIPELINING\r\n') });
  s.step({ type: 'transaction', job: job() });
  s.step({ type: 'bytes', data: Buffer.from('250 ok\r\n250 ok\r\n250 ok\r\n') });
  s.step({ type: 'bytes', data: Buffer.from('354 go\r\n') });
  s.step({ type: 'content-sent', bdatChunks: 0 });
  s.step({ type: 'bytes', data: Buffer.from('250 a\r\n') });
  const out = s.step({ type: 'closed', reason: 'reset' });
  const res = out.find((o) => o.type === 'results');
  assert.ok(res !== undefined && res.type === 'results');
  assert.deepEqual(res.results.map((x) => x.status), ['delivered', 'deferred']);
});

test('CHUNKING: BDAT instead of DATA; a refused chunk fails the transaction', () => {
  const ok = drive(config(), [job()], ['220 mx\r\n', '250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n', '250 ok\r\n250 ok\r\n250 ok\r\n', '250 2.0.0 got it\r\n']);
  assert.ok(ok.sent.endsWith('RCPT TO:<b@example.test>\r\n<CONTENT bdat>'));
  assert.deepEqual(ok.results[0].map((x) => x.status), ['delivered', 'delivered']);
  const bad = drive(config(), [job()], ['220 mx\r\n', '250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n', '250 ok\r\n250 ok\r\n250 ok\r\n', '554 5.6.0 bad\r\n']);
  assert.deepEqual(bad.results[0].map((x) => x.status), ['failed', 'failed']);
});

test('reuse: the second transaction starts with RSET (leading the pipelined group); a failed RSET is reuse-failed', () => {
  const two = drive(config(), [job(), job()], ['220 mx\r\n', EHLO_FULL, '250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n', '250 ok\r\n', '250 reset\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n', '250 ok\r\n']);
  assert.equal(two.results.length, 2);
  assert.ok(two.sent.includes('<CONTENT data>RSET\r\nMAIL FROM'));
  const stale = drive(config(), [job(), job()], ['220 mx\r\n', EHLO_FULL, '250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n', '250 ok\r\n', '421 4.4.2 idle timeout\r\n']);
  assert.ok(stale.outputs.some((o) => o.type === 'reuse-failed'));
  assert.equal(stale.results.length, 1, 'no result for the second job: the courier sends it again');
  assert.ok(stale.outputs.at(-1)?.type === 'close');
  // Lock-step (no PIPELINING): RSET alone, and nothing of the job is sent before its reply.
  const lock = drive(config(), [job(), job()], ['220 mx\r\n', '250 mx\r\n', '250 ok\r\n', '250 ok\r\n', '250 ok\r\n', '354 go\r\n', '250 ok\r\n', '421 4.4.2 idle timeout\r\n']);
  assert.ok(lock.outputs.some((o) => o.type === 'reuse-failed'));
  assert.equal(lock.sent.split('MAIL FROM').length, 2, 'the second MAIL was never sent');
});

test('pipelined DATA after an envelope with no accepted recipient: its 554 is consumed; a 354 closes the connection', () => {
  const r = drive(config(), [job()], ['220 mx\r\n', EHLO_FULL, '250 ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n554 5.5.1 no valid recipients\r\n']);
  assert.deepEqual(r.results[0].map((x) => [x.status, x.reply.code]), [['failed', 550], ['failed', 550]]);
  assert.ok(!r.outputs.some((o) => o.type === 'close'));
  const broken = drive(config(), [job()], ['220 mx\r\n', EHLO_FULL, '250 ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n354 go\r\n']);
  assert.deepEqual(broken.results[0].map((x) => x.status), ['failed', 'failed']);
  assert.ok(!broken.sent.includes('<CONTENT'));
  assert.ok(broken.outputs.some((o) => o.type === 'close'));
});

test('trouble defers: 4xx to MAIL, a timeout after the dot, a close mid-envelope; 5xx after the data fails', () => {
  const mail4 = drive(config(), [job()], ['220 mx\r\n', EHLO_FULL, '451 4.3.0 later\r\n503 5.5.1 no mail\r\n503 5.5.1 no mail\r\n503 5.5.1 no valid recipients\r\n']);
  assert.deepEqual(mail4.results[0].map((x) => [x.status, x.reply.code]), [['deferred', 451], ['deferred', 451]]);
  const after5 = drive(config(), [job()], ['220 mx\r\n', EHLO_FULL, '250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n', '554 5.7.1 spam\r\n']);
  assert.deepEqual(after5.results[0].map((x) => x.status), ['failed', 'failed']);
  const s = new ClientSession(config());
  s.start();
  s.step({ type: 'bytes', data: Buffer.from('220 mx\r\n') });
  s.step({ type: 'bytes', data: Buffer.from(EHLO_FULL) });
  s.step({ type: 'transaction', job: job() });
  s.step({ type: 'bytes', data: Buffer.from('250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n') });
  const deadline = s.step({ type: 'content-sent', bdatChunks: 0 }).find((o) => o.type === 'deadline');
  assert.deepEqual(deadline, { type: 'deadline', timeoutMs: RFC_5321_TIMEOUTS.dataEndMs });
  const out = s.step({ type: 'timeout' });
  const res = out.find((o) => o.type === 'results');
  assert.ok(res !== undefined && res.type === 'results' && res.results.every((x) => x.status === 'deferred' && x.reply.enhanced === '4.4.2'));
  assert.ok(out.some((o) => o.type === 'close'));
  const c = new ClientSession(config());
  c.start();
  c.step({ type: 'bytes', data: Buffer.from('220 mx\r\n') });
  c.step({ type: 'bytes', data: Buffer.from(EHLO_FULL) });
  c.step({ type: 'transaction', job: job() });
  const closed = c.step({ type: 'closed', reason: 'reset' }).find((o) => o.type === 'results');
  assert.ok(closed !== undefined && closed.type === 'results' && closed.results.every((x) => x.status === 'deferred'));
});

test('a reply in the middle of the DATA content is the server giving up: never a delivery', () => {
  const s = new ClientSession(config());
  s.start();
  s.step({ type: 'bytes', data: Buffer.from('220 mx\r\n') });
  s.step({ type: 'bytes', data: Buffer.from(EHLO_FULL) });
  s.step({ type: 'transaction', job: job() });
  s.step({ type: 'bytes', data: Buffer.from('250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n') });
  const early = s.step({ type: 'bytes', data: Buffer.from('250 ok\r\n') }).find((o) => o.type === 'results');
  assert.ok(early !== undefined && early.type === 'results' && early.results.every((x) => x.status === 'deferred'));
});

const scriptArb = fc.record({
  rcptCodes: fc.array(fc.constantFrom(250, 251, 450, 550, 552), { minLength: 1, maxLength: 5 }),
  mailCode: fc.constantFrom(250, 250, 250, 451, 550),
  finalCode: fc.constantFrom(250, 451, 554),
  protocol: fc.constantFrom<'smtp' | 'lmtp'>('smtp', 'lmtp'),
  multiline: fc.boolean(),
});

test('fast-check: any chunking of the server bytes gives the same commands and the same results', () => {
  fc.assert(
    fc.property(scriptArb, fc.array(fc.nat(), { minLength: 1, maxLength: 12 }), ({ rcptCodes, mailCode, finalCode, protocol, multiline }, cuts) => {
      const recipients = rcptCodes.map((_, i) => ({ address: `r${i}@example.test` }));
      const line = (code: number, text: string): string => (multiline ? `${code}-${Math.floor(code / 100)}.0.0 ${text}\r\n${code} ${Math.floor(code / 100)}.0.0 more\r\n` : `${code} ${text}\r\n`);
      const accepted = mailCode === 250 ? rcptCodes.filter((c) => c < 300).length : 0;
      const envelope = line(mailCode, 'mail') + rcptCodes.map((c) => line(c, 'rcpt')).join('');
      // The pipelined DATA's reply ends the envelope burst.
      const bursts = ['220 mx\r\n', '250-mx\r\n250 PIPELINING\r\n', envelope + (accepted > 0 ? '354 go\r\n' : line(554, 'no valid recipients'))];
      if (accepted > 0) bursts.push(protocol === 'lmtp' ? Array.from({ length: accepted }, () => line(finalCode, 'final')).join('') : line(finalCode, 'final'));
      const cfg = config({ protocol });
      const whole = drive(cfg, [job({ recipients })], bursts);
      const cut = drive(cfg, [job({ recipients })], bursts, cuts);
      assert.equal(cut.sent, whole.sent);
      assert.deepEqual(cut.results, whole.results);
      assert.equal(whole.results.length, 1);
      assert.equal(whole.results[0].length, recipients.length);
      for (const [i, r] of whole.results[0].entries()) {
        if (mailCode !== 250) assert.equal(r.reply.code, mailCode);
        else if (rcptCodes[i] >= 300) assert.equal(r.reply.code, rcptCodes[i]);
        else assert.equal(r.reply.code, finalCode);
      }
    }),
    { seed: SEED, numRuns: 300 },
  );
});
