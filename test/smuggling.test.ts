// SMTP smuggling (December 2023 research): every end-of-data variant other than CRLF.CRLF, with a
// complete smuggled transaction behind it, fed through the core whole, byte by byte and in random
// chunkings; and a property that no bytes inside a message ever get a reply of their own.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ContentScanner } from '../src/protocol/framing.ts';
import { formatReply } from '../src/protocol/replies.ts';
import { machineConfigFrom } from '../src/server/machine-config.ts';
import { defaultConfig } from '../src/config/types.ts';
import { MachineDriver } from './helpers/drive.ts';

const SEED = 20231218;

const VARIANTS: Record<string, string> = {
  'LF.LF': '\n.\n',
  'LF.CRLF': '\n.\r\n',
  'CR.CR': '\r.\r',
  'CR.CRLF': '\r.\r\n',
  'CRLF.LF': '\r\n.\n',
  'CRLF.CR': '\r\n.\r',
  'LF.CR': '\n.\r',
  'CRLF NUL.CRLF': '\r\n\x00.\r\n',
  'CRLF.NUL CRLF': '\r\n.\x00\r\n',
  'CR LF.CRLF (CR then LF.CRLF)': '\r\n.\r\r\n',
  'LF LF.LF LF': '\n\n.\n\n',
  'CR CR.CR CR': '\r\r.\r\r',
  'CRLF..CRLF then bare': '\r\n..\n',
};

const SMUGGLED = 'MAIL FROM:<admin@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nFrom: admin@example.test\r\n\r\nsmuggled\r\n';

type Run = { replies: string[]; stored: Buffer[] };

function session(bareLineEndings: 'reject' | 'normalize', pieces: Buffer[]): Run {
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  cfg.smtp.bareLineEndings = bareLineEndings;
  const d = new MachineDriver(machineConfigFrom(cfg, { isTlsAvailable: false }), { peer: '192.0.2.9', sessionId: 'S', commits: 'accept' });
  for (const p of pieces) d.send(p);
  return { replies: d.replies.map((r) => formatReply(r).trimEnd().split('\r\n').pop()!), stored: d.stored };
}

function wire(variant: string): Buffer {
  return Buffer.from(
    'EHLO client.example\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n' +
      `Subject: one\r\n\r\nhello${variant}${SMUGGLED}.\r\nQUIT\r\n`,
    'latin1',
  );
}

function codes(r: Run): string[] {
  return r.replies.map((l) => l.slice(0, 3));
}

const chunkings: Record<string, (b: Buffer) => Buffer[]> = {
  whole: (b) => [b],
  'byte by byte': (b) => Array.from(b, (x) => Buffer.from([x])),
  'split in three': (b) => [b.subarray(0, 90), b.subarray(90, 101), b.subarray(101)],
};

for (const [name, variant] of Object.entries(VARIANTS)) {
  for (const [how, chunk] of Object.entries(chunkings)) {
    test(`smuggling ${name} (${how}): refused, smuggled commands never executed`, () => {
      const r = session('reject', chunk(wire(variant)));
      // 220, EHLO 250, MAIL 250, RCPT 250, 354, one refusal after the real end, QUIT 221.
      assert.deepEqual(codes(r), ['220', '250', '250', '250', '354', '550', '221'], JSON.stringify(r.replies));
      assert.equal(r.stored.length, 0);
    });
  }
  test(`smuggling ${name} (normalize): one message, smuggled text stays content`, () => {
    const r = session('normalize', [wire(variant)]);
    assert.deepEqual(codes(r), ['220', '250', '250', '250', '354', '250', '221'], JSON.stringify(r.replies));
    assert.equal(r.stored.length, 1);
    const text = r.stored[0].toString('latin1');
    assert.ok(text.includes('MAIL FROM:<admin@example.test>'), 'smuggled text is content');
    assert.doesNotMatch(text.replace(/\r\n/g, ''), /[\r\n\0]/, 'stored content is canonical CRLF text');
  });
  test(`smuggling ${name} (random chunkings)`, () => {
    const bytes = wire(variant);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: bytes.length }), { minLength: 1, maxLength: 12 }), (cuts) => {
        const sorted = [...new Set(cuts)].sort((a, b) => a - b);
        const pieces: Buffer[] = [];
        let at = 0;
        for (const c of sorted) {
          pieces.push(bytes.subarray(at, c));
          at = c;
        }
        pieces.push(bytes.subarray(at));
        assert.deepEqual(codes(session('reject', pieces)), ['220', '250', '250', '250', '354', '550', '221']);
      }),
      { seed: SEED, numRuns: 60 },
    );
  });
}

/** RFC 5321 4.5.2 transparency, as an honest client applies it to CRLF lines. */
function dotStuff(content: string): string {
  return content.replace(/(^|\r\n)\./g, '$1..');
}

const dangerous = fc.constantFrom('\r', '\n', '\r\n', '.', '\x00', 'x', ' ', 'MAIL FROM:<e@example.test>', 'RCPT TO:<alice@example.test>', 'DATA', 'QUIT', 'RSET', '\r\n.\n', '\n.\r\n', '\u00e9');

test('property: no bytes inside a message ever get a reply of their own', () => {
  fc.assert(
    fc.property(fc.array(dangerous, { maxLength: 60 }).map((a) => a.join('')), fc.integer({ min: 1, max: 40 }), (content, step) => {
      const body = dotStuff(content);
      const end = body.endsWith('\r\n') || body === '' ? '.\r\n' : '\r\n.\r\n';
      const bytes = Buffer.from(`HELO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n${body}${end}QUIT\r\n`, 'latin1');
      const pieces: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += step) pieces.push(bytes.subarray(i, i + step));
      const r = session('reject', pieces);
      const c = codes(r);
      // Exactly one reply for the whole message, whatever it contained, then QUIT's.
      assert.equal(c.length, 7, JSON.stringify(r.replies));
      assert.deepEqual(c.slice(0, 5), ['220', '250', '250', '250', '354']);
      assert.equal(c[6], '221');
      const isCanonical = !/[\r\n\0]/.test(content.replace(/\r\n/g, ''));
      if (isCanonical) {
        assert.equal(c[5], '250');
        const stored = r.stored[0].toString('latin1');
        const expected = content === '' || content.endsWith('\r\n') ? content : `${content}\r\n`;
        assert.equal(stored.slice(stored.indexOf('\r\n', stored.indexOf('\tfor <')) + 2), expected);
      } else {
        assert.equal(c[5], '550');
      }
    }),
    { seed: SEED, numRuns: 400 },
  );
});

test('property: the content scanner gives the same content and defects for any chunking', () => {
  fc.assert(
    fc.property(fc.array(dangerous, { maxLength: 80 }).map((a) => a.join('')), fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 10 }), fc.boolean(), fc.boolean(), (content, sizes, isDot, isNormalizing) => {
      const bytes = Buffer.from(content, 'latin1');
      const scan = (pieces: Buffer[]): { text: string; end: number; defects: object; size: number } => {
        const s = new ContentScanner({ isDotStuffed: isDot, maxBytes: 1 << 20, maxLineBytes: 1000, isNormalizing });
        let end = -1;
        let offset = 0;
        for (const p of pieces) {
          if (end !== -1) break;
          const at = s.scan(p, 0, p.length);
          if (at !== -1) end = offset + at;
          offset += p.length;
        }
        return { text: Buffer.concat(s.chunks).toString('latin1'), end, defects: { ...s.defects }, size: s.size };
      };
      const whole = scan([bytes]);
      const pieces: Buffer[] = [];
      let k = 0;
      for (let i = 0; i < bytes.length; ) {
        const n = sizes[k++ % sizes.length];
        pieces.push(bytes.subarray(i, i + n));
        i += n;
      }
      assert.deepEqual(scan(pieces), whole);
    }),
    { seed: SEED, numRuns: 500 },
  );
});
