// Parsers and the framer never throw on arbitrary input, and keep their documented invariants.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { decodeXtext, encodeXtext, parseMailbox, parsePath } from '../src/protocol/address.ts';
import { parseCommand, parseParams } from '../src/protocol/command.ts';
import { Framer } from '../src/protocol/framing.ts';
import { formatReply, reply } from '../src/protocol/replies.ts';

const SEED = 5321;

test('property: command and path parsers never throw', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (s) => {
      parseCommand(s);
      parsePath(s, { allowNull: true, allowUtf8: true });
      parsePath(s, { allowNull: false, allowUtf8: false });
      parseParams(s);
      parseMailbox(s, false);
    }),
    { seed: SEED, numRuns: 2000 },
  );
});

test('property: xtext decode(encode(x)) === x', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'grapheme-ascii', maxLength: 100 }), (s) => {
      assert.equal(decodeXtext(encodeXtext(s)), s);
    }),
    { seed: SEED, numRuns: 500 },
  );
});

test('property: every formatted reply line carries the code and ends in CRLF', () => {
  fc.assert(
    fc.property(fc.integer({ min: 200, max: 599 }), fc.array(fc.stringMatching(/^[ -~]{0,40}$/), { minLength: 1, maxLength: 5 }), (code, lines) => {
      const wire = formatReply(reply(code, '2.0.0', ...lines));
      const parts = wire.split('\r\n');
      assert.equal(parts.pop(), '');
      parts.forEach((p, i) => assert.equal(p.slice(0, 4), `${code}${i === parts.length - 1 ? ' ' : '-'}`));
    }),
    { seed: SEED, numRuns: 300 },
  );
});

test('property: command framing gives the same frames for any chunking, never more than the cap buffered', () => {
  const alphabet = fc.constantFrom('\r', '\n', '\r\n', '\x00', 'NOOP', ' ', 'a'.repeat(100), 'x');
  fc.assert(
    fc.property(fc.array(alphabet, { maxLength: 40 }).map((a) => a.join('')), fc.integer({ min: 1, max: 50 }), (text, step) => {
      const bytes = Buffer.from(text, 'latin1');
      const frames = (pieces: Buffer[]): string[] => {
        const f = new Framer(512);
        const out: string[] = [];
        for (const p of pieces) {
          f.push(p);
          for (let fr = f.next(); fr !== null; fr = f.next()) out.push(fr.type === 'line' ? `line:${fr.line.toString('latin1')}` : fr.type === 'bad-line' ? `bad:${fr.defect}` : fr.type);
          assert.ok(f.bufferedBytes <= 512, 'over-long input is not buffered');
        }
        return out;
      };
      const pieces: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += step) pieces.push(bytes.subarray(i, i + step));
      assert.deepEqual(frames(pieces), frames([bytes]));
    }),
    { seed: SEED, numRuns: 800 },
  );
});

test('addresses: RFC 5321 4.1.2 examples', () => {
  const ok = (s: string, utf8 = false) => parsePath(s, { allowNull: true, allowUtf8: utf8 }).ok;
  assert.ok(ok('<a@example.test>'));
  assert.ok(ok('<"quoted local"@example.test>'));
  assert.ok(ok('<"a@b"@example.test>'));
  assert.ok(ok('<a@[192.0.2.1]>'));
  assert.ok(ok('<a@[IPv6:2001:db8::1]>'));
  assert.ok(ok('<@relay.example,@other.example:a@example.test>'));
  assert.ok(ok('<>'));
  assert.ok(ok('<jörg@example.test>', true));
  assert.ok(!ok('<jörg@example.test>'));
  assert.ok(!ok('<a..b@example.test>'));
  assert.ok(!ok('<.a@example.test>'));
  assert.ok(!ok('<a@example.test.>'));
  assert.ok(!ok('<a@-example.test>'));
  assert.ok(!ok('<a@[300.1.1.1]>'));
  assert.ok(!ok('<a@[foo:bar]>'));
  assert.ok(!ok('a@example.test'));
  assert.ok(!ok('<a@example.test'));
  assert.ok(!ok(`<${'a'.repeat(65)}@example.test>`));
  assert.ok(!ok('<@bad:a@example.test>'.replace('@bad', 'bad')));
});

test('security: C1 controls, bidi overrides and invalid UTF-8 are refused even under SMTPUTF8', () => {
  const ok = (s: string) => parsePath(s, { allowNull: false, allowUtf8: true }).ok;
  assert.ok(ok('<jörg@exämple.test>'));
  assert.ok(!ok('<a\u009bb@example.test>'));
  assert.ok(!ok('<a\u202eb@example.test>'));
  assert.ok(!ok('<"a\u202eb"@example.test>'));
  assert.ok(!ok(`<${Buffer.from([0xff, 0xfe]).toString('utf8')}@example.test>`));
  assert.ok(!ok('<a@ex\u2066ample.test>'));
  assert.ok(!ok('<a@[IPv6:fe80::1%eth0]>'));
});
