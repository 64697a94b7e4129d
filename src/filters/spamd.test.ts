// spamd's reply (every form, any split of its bytes, garbage never throws) and what a score
// means (spam-verdict.ts: thresholds, the scanner's own action, the X-Spam-* edits that replace
// a message's own). The real spamd is in test/integration/spamd.test.ts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { contentChunks } from '../message/accepted.ts';
import { finishMessage, preparedFields, prepareMessage } from '../message/assemble.ts';
import { parseFields } from '../message/header.ts';
import { decide, spamHeaderEdits, type SpamThresholds } from './spam-verdict.ts';
import { MAX_REPLY_BYTES, parseSpamdReply, SpamdReplyReader, type SpamdResult } from './spamd.ts';

const FC = { seed: 783, numRuns: 300 };
const OK = 'SPAMD/1.1 0 EX_OK\r\nContent-length: 17\r\nSpam: True ; 1000.3 / 5.0\r\n\r\nGTUBE,NO_RECEIVED';

test('spamd replies: the score, the required score and the rules; errors and garbage', () => {
  assert.deepEqual(parseSpamdReply(Buffer.from(OK), true), { kind: 'scored', score: 1000.3, required: 5, action: null, symbols: ['GTUBE', 'NO_RECEIVED'] });
  assert.deepEqual(parseSpamdReply(Buffer.from('SPAMD/1.1 0 EX_OK\r\nSpam: False ; -1.2 / 5.0\r\n\r\n'), true), { kind: 'scored', score: -1.2, required: 5, action: null, symbols: [] });
  assert.equal(parseSpamdReply(Buffer.from(OK.slice(0, -3)), false), null, 'waits for its Content-length');
  assert.equal(parseSpamdReply(Buffer.from(OK.slice(0, -3)), true)?.kind, 'error');
  assert.deepEqual(parseSpamdReply(Buffer.from('SPAMD/1.0 76 Bad header line: (EOF)\r\n'), true), { kind: 'error', code: 'scanner', reason: 'spamd: 76 Bad header line: (EOF)' });
  assert.equal(parseSpamdReply(Buffer.from('HTTP/1.1 200 OK\r\n\r\n'), true)?.kind, 'error');
  assert.equal(parseSpamdReply(Buffer.from('SPAMD/1.1 0 EX_OK\r\nSpam: maybe\r\n\r\n'), true)?.kind, 'error');
  assert.equal(parseSpamdReply(Buffer.from('SPAMD/1.1 0 EX_OK\r\nContent-length: 3\r\nSpam: True ; 1 / 5\r\n\r\na b'), true)?.kind, 'error');
});

test('spamd replies: any split reads the same; arbitrary bytes never throw', () => {
  const replies = fc.oneof(fc.constant(OK), fc.string({ maxLength: 80 }), fc.constant('SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.3 / 5.0\r\n\r\n'));
  fc.assert(
    fc.property(replies, fc.array(fc.integer({ min: 1, max: 16 }), { minLength: 1, maxLength: 8 }), (reply, cuts) => {
      const bytes = Buffer.from(reply, 'latin1');
      const whole = new SpamdReplyReader();
      const expected = whole.push(bytes) ?? whole.end();
      const r = new SpamdReplyReader();
      let got: SpamdResult | null = null;
      for (let at = 0, i = 0; at < bytes.length && got === null; i++) {
        const n = cuts[i % cuts.length];
        got = r.push(bytes.subarray(at, at + n));
        at += n;
      }
      got ??= r.end();
      assert.deepEqual(got, expected);
    }),
    FC,
  );
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 2000 }), { maxLength: 5 }), (parts) => {
      const r = new SpamdReplyReader();
      for (const p of parts) r.push(Buffer.from(p));
      r.end();
    }),
    FC,
  );
  assert.equal(new SpamdReplyReader().push(Buffer.alloc(MAX_REPLY_BYTES + 1, 0x41))?.kind, 'error');
});

const T: SpamThresholds = { addHeaderScore: 5, tempfailScore: 10, rejectScore: 15, useScannerAction: false };

test('a score against the thresholds, or the scanner\'s own action', () => {
  const f = (score: number, action: string | null = null) => ({ score, required: null, action, symbols: [] });
  assert.equal(decide(f(1), T), 'clean');
  assert.equal(decide(f(5), T), 'tagged');
  assert.equal(decide(f(10), T), 'tempfail');
  assert.equal(decide(f(15), T), 'reject');
  assert.equal(decide(f(100), { ...T, tempfailScore: null, rejectScore: null }), 'tagged');
  assert.equal(decide(f(100, 'no action'), T), 'reject', 'the action counts only when asked');
  const own = { ...T, useScannerAction: true };
  assert.equal(decide(f(100, 'no action'), own), 'clean');
  assert.equal(decide(f(0, 'reject'), own), 'reject');
  assert.equal(decide(f(0, 'soft reject'), own), 'tempfail');
  assert.equal(decide(f(6, 'add header'), own), 'tagged');
  assert.equal(decide(f(16, 'unknown'), own), 'reject', 'an unknown action: the thresholds');
});

test('X-Spam-* edits: the message\'s own fields deleted first, ours added on top; rule names cleaned', () => {
  const fields = parseFields(Buffer.from('Received: x\r\nX-Spam-Status: No\r\nx-spam-flag: NO\r\nX-Spam-Status: No\r\nSubject: s\r\n\r\n', 'latin1'));
  const edits = spamHeaderEdits(fields, { score: 7.25, required: null, action: 'add header', symbols: ['A_B', 'BAD,\r\nX-Evil: 1'] }, 'tagged', T, 'rspamd');
  assert.deepEqual(edits, [
    { op: 'delete', name: 'X-Spam-Flag', index: 1 },
    { op: 'delete', name: 'X-Spam-Flag', index: 1 },
    { op: 'delete', name: 'X-Spam-Status', index: 1 },
    { op: 'delete', name: 'X-Spam-Status', index: 1 },
    { op: 'delete', name: 'X-Spam-Status', index: 1 },
    { op: 'delete', name: 'X-Spam-Score', index: 1 },
    { op: 'delete', name: 'X-Spam-Action', index: 1 },
    { op: 'add', field: 'X-Spam-Action: add header' },
    { op: 'add', field: 'X-Spam-Score: 7.25' },
    { op: 'add', field: 'X-Spam-Status: Yes, score=7.25 required=5.0 tests=A_B,BADX-Evil:1 scanner=rspamd' },
    { op: 'add', field: 'X-Spam-Flag: YES' },
  ]);
});

test('X-Spam-* edits of two scanners in a row, as the content stage applies them: the last one\'s fields, no forged one', () => {
  const prepared = prepareMessage({
    queueId: 'Q1', sessionId: 'S', nowMs: Date.UTC(2026, 11, 1), hostname: 'mx.example.test',
    client: { address: '192.0.2.1', port: 1, heloName: 'c.example', isEsmtp: true, isTls: false },
    reversePath: 'a@c.example', bodyType: '7BIT', smtputf8: false, recipients: [{ address: 'bob@example.test' }], addedFields: [],
    content: { kind: 'memory', chunks: [Buffer.from('X-Spam-Status: No, forged\r\nX-Spam-Flag: NO\r\nSubject: s\r\n\r\nbody\r\n', 'latin1')] },
  });
  const fields = preparedFields(prepared);
  const spamd = spamHeaderEdits(fields, { score: 9, required: 5, action: null, symbols: ['A'] }, 'tagged', T, 'spamd');
  const rspamd = spamHeaderEdits(fields, { score: 1, required: 15, action: 'no action', symbols: ['B'] }, 'clean', T, 'rspamd');
  const stored = Buffer.concat(contentChunks(finishMessage(prepared, [{ headers: spamd }, { headers: rspamd }])!)).toString('latin1');
  assert.match(stored, /^X-Spam-Status: No, score=1\.0 required=5\.0 tests=B scanner=rspamd\r\nX-Spam-Score: 1\.0\r\nX-Spam-Action: no action\r\nReceived: /);
  assert.equal(stored.match(/^X-Spam-/gm)?.length, 3, stored);
  const one = Buffer.concat(contentChunks(finishMessage(prepared, [{ headers: spamd }])!)).toString('latin1');
  assert.match(one, /^X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=9\.0 required=5\.0 tests=A scanner=spamd\r\nX-Spam-Score: 9\.0\r\nReceived: /);
  assert.equal(one.match(/^X-Spam-/gm)?.length, 3, one);
});
