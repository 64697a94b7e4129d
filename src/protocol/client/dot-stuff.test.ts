// The wire encoder: canonical CRLF whatever the stored line ends, dot-stuffing, the terminator,
// and the same output for any chunking of the same content.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { encodeForWire, WireEncoder } from './dot-stuff.ts';

const SEED = 5321_452;

/** What a receiver does (RFC 5321 4.5.2): cut at CRLF.CRLF, drop one leading dot per line. */
function unstuff(wire: Buffer): Buffer {
  const text = wire.toString('latin1');
  assert.ok(text.endsWith('\r\n.\r\n') || text === '.\r\n', 'ends with the terminator');
  const body = text === '.\r\n' ? '' : text.slice(0, -3);
  assert.equal(body.indexOf('\r\n.\r\n'), -1, 'no early terminator');
  return Buffer.from(body.split('\r\n').map((l) => (l.startsWith('.') ? l.slice(1) : l)).join('\r\n'), 'latin1');
}

function canonical(content: Buffer): Buffer {
  let s = content.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n');
  if (s.length > 0 && !s.endsWith('\r\n')) s += '\r\n';
  return Buffer.from(s, 'latin1');
}

test('a line of only ".", lines starting with dots and bare CR/LF go out canonical and stuffed', () => {
  const stored = Buffer.from('Subject: x\r\n\r\n.\r\n..two\r\n.dot\nbare lf\rbare cr\r\r\nend');
  const wire = encodeForWire(stored, 'data');
  assert.equal(wire.toString('latin1'), 'Subject: x\r\n\r\n..\r\n...two\r\n..dot\r\nbare lf\r\nbare cr\r\n\r\nend\r\n.\r\n');
  assert.deepEqual(unstuff(wire), canonical(stored));
});

test('BDAT mode canonicalises line ends but never stuffs and adds no terminator', () => {
  assert.equal(encodeForWire(Buffer.from('.a\n.\r\nb'), 'bdat').toString(), '.a\r\n.\r\nb\r\n');
  assert.equal(encodeForWire(Buffer.alloc(0), 'bdat').length, 0);
  assert.equal(encodeForWire(Buffer.alloc(0), 'data').toString(), '.\r\n');
});

test('a CR at the end of one chunk and an LF at the start of the next are one line end', () => {
  const e = new WireEncoder('data');
  const out = Buffer.concat([e.push(Buffer.from('a\r')), e.push(Buffer.from('\n.b\r')), e.push(Buffer.from('.c')), e.end()]);
  assert.equal(out.toString(), 'a\r\n..b\r\n..c\r\n.\r\n');
  assert.equal(e.octetsOut, out.length);
});

const contentByte = fc.constantFrom(0x0d, 0x0a, 0x2e, 0x61, 0x20, 0x00, 0xe9);

test('fast-check: any chunking gives the same wire bytes; unstuffed they are the canonical content', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }).chain((raw) => fc.tuple(fc.constant(raw), fc.array(contentByte, { maxLength: 200 }), fc.array(fc.nat(), { maxLength: 12 }))), ([raw, special, cuts]) => {
      const content = Buffer.concat([Buffer.from(raw), Buffer.from(special)]);
      const whole = encodeForWire(content, 'data');
      const at = [...new Set(cuts.map((c) => c % (content.length + 1)))].sort((a, b) => a - b);
      const e = new WireEncoder('data');
      const parts: Buffer[] = [];
      let prev = 0;
      for (const c of [...at, content.length]) {
        parts.push(e.push(content.subarray(prev, c)));
        prev = c;
      }
      parts.push(e.end());
      assert.deepEqual(Buffer.concat(parts), whole);
      // Security: no bare CR or LF on the wire.
      const s = whole.toString('latin1');
      assert.equal(s.replace(/\r\n/g, '').search(/[\r\n]/), -1);
      assert.deepEqual(unstuff(whole), canonical(content));
    }),
    { seed: SEED, numRuns: 500 },
  );
});
