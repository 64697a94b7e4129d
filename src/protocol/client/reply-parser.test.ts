// The client's reply parser: multi-line replies, enhanced codes, its two caps (a line, a reply)
// held while scanning, and the same replies for any chunking of the same bytes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MAX_REPLY_LINE_OCTETS, MAX_REPLY_LINES, ReplyParser, type ReplyEvent } from './reply-parser.ts';

const SEED = 10_2033;

function parseAll(chunks: Buffer[]): ReplyEvent[] {
  const p = new ReplyParser();
  const out: ReplyEvent[] = [];
  for (const c of chunks) out.push(...p.push(c));
  out.push(...p.end());
  return out;
}

test('a multi-line EHLO reply is one reply; lines keep their text, the code is dropped', () => {
  const ev = parseAll([Buffer.from('250-mx.example.test Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n')]);
  assert.deepEqual(ev, [{ type: 'reply', reply: { code: 250, enhanced: null, lines: ['mx.example.test Hello', 'PIPELINING', 'SIZE 1000', '8BITMIME'] } }]);
});

test('the enhanced code is taken from the first line and stripped from every line', () => {
  const ev = parseAll([Buffer.from('550-5.1.1 No such user\r\n550 5.1.1 here\r\n')]);
  assert.deepEqual(ev, [{ type: 'reply', reply: { code: 550, enhanced: '5.1.1', lines: ['No such user', 'here'] } }]);
  // A class that does not match the code is text, not an enhanced code.
  const ev2 = parseAll([Buffer.from('250 5.1.1 odd\r\n')]);
  assert.deepEqual(ev2, [{ type: 'reply', reply: { code: 250, enhanced: null, lines: ['5.1.1 odd'] } }]);
});

test('a bare code ends a reply; a bare LF ends a line', () => {
  assert.deepEqual(parseAll([Buffer.from('250\n354 go\r\n')]), [
    { type: 'reply', reply: { code: 250, enhanced: null, lines: [''] } },
    { type: 'reply', reply: { code: 354, enhanced: null, lines: ['go'] } },
  ]);
});

test('garbage, a code change inside a reply and a cut reply are protocol errors, and the parser stays dead', () => {
  for (const bad of ['hello\r\n', '25\r\n', '699 x\r\n', '250x\r\n', '250-a\r\n251 b\r\n']) {
    const ev = parseAll([Buffer.from(bad)]);
    assert.equal(ev.at(-1)?.type, 'protocol-error', bad);
  }
  const p = new ReplyParser();
  assert.deepEqual(p.push(Buffer.from('250-a\r\n')), []);
  assert.equal(p.end()[0].type, 'protocol-error');
  const q = new ReplyParser();
  q.push(Buffer.from('junk\r\n'));
  assert.deepEqual(q.push(Buffer.from('250 ok\r\n')), []);
});

test(`a line over ${MAX_REPLY_LINE_OCTETS} octets is refused as soon as the cap is passed; a 10 MB line is never buffered`, () => {
  const p = new ReplyParser();
  const block = Buffer.alloc(64 * 1024, 0x61);
  block.write('250 ', 0);
  let events: ReplyEvent[] = [];
  let fed = 0;
  for (let i = 0; i < 160 && events.length === 0; i++) {
    events = p.push(block);
    fed += block.length;
  }
  assert.equal(events[0].type, 'protocol-error');
  assert.equal(fed, block.length, 'refused within the first 64 KiB read');
  // A line exactly at the cap is fine.
  const ok = parseAll([Buffer.from(`250 ${'x'.repeat(MAX_REPLY_LINE_OCTETS - 4)}\r\n`)]);
  assert.equal(ok[0].type, 'reply');
  const over = parseAll([Buffer.from(`250 ${'x'.repeat(MAX_REPLY_LINE_OCTETS - 3)}\r\n`)]);
  assert.equal(over[0].type, 'protocol-error');
});

test(`a reply over ${MAX_REPLY_LINES} lines is refused`, () => {
  const ok = parseAll([Buffer.from('250-x\r\n'.repeat(MAX_REPLY_LINES - 1) + '250 y\r\n')]);
  assert.equal(ok[0].type, 'reply');
  const bad = parseAll([Buffer.from('250-x\r\n'.repeat(MAX_REPLY_LINES) + '250 y\r\n')]);
  assert.equal(bad[0].type, 'protocol-error');
});

function chunked(buf: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of at) {
    out.push(buf.subarray(prev, c));
    prev = c;
  }
  out.push(buf.subarray(prev));
  return out;
}

const replyLine = fc.tuple(fc.constantFrom(220, 250, 354, 421, 450, 550, 554), fc.boolean(), fc.string({ maxLength: 40 }).map((s) => s.replace(/[\r\n]/g, ' ')), fc.integer({ min: 1, max: 4 }));

test('fast-check: any chunking of the server bytes gives the same replies', () => {
  fc.assert(
    fc.property(fc.array(replyLine, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 20 }), fc.boolean(), (replies, cuts, isBareLf) => {
      const eol = isBareLf ? '\n' : '\r\n';
      const wire = Buffer.from(
        replies.map(([code, hasEnh, text, n]) => Array.from({ length: n }, (_, i) => `${code}${i === n - 1 ? ' ' : '-'}${hasEnh ? `${Math.floor(code / 100)}.0.0 ` : ''}${text}${eol}`).join('')).join(''),
      );
      const whole = parseAll([wire]);
      assert.equal(whole.length, replies.length);
      assert.deepEqual(parseAll(chunked(wire, cuts)), whole);
      assert.deepEqual(parseAll([...wire].map((b) => Buffer.from([b]))), whole);
    }),
    { seed: SEED, numRuns: 300 },
  );
});

test('fast-check: arbitrary bytes never throw and never exceed the caps', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.array(fc.nat(), { maxLength: 10 }), (bytes, cuts) => {
      const buf = Buffer.from(bytes);
      assert.deepEqual(parseAll(chunked(buf, cuts)), parseAll([buf]));
    }),
    { seed: SEED, numRuns: 300 },
  );
});
