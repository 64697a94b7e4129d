// Hop counting: the count of Received fields in the header section, the same for any chunking,
// case-insensitive, stopping at the header's end and at `stopAfter`; and the session refusal of
// a looping message whose body went to its body file (the header section stays in memory).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MachineDriver, testMachineConfig } from '../../test/helpers/drive.ts';
import { countReceivedFields, hasTooManyHops, MAX_RECEIVED_FIELDS } from './hops.ts';

const field = (i: number) => `Received: from h${i}.example by h${i + 1}.example; Tue, 1 Dec 2026 00:00:00 +0000\r\n`;
const many = (n: number) => Array.from({ length: n }, (_, i) => field(i)).join('');
const buf = (s: string) => [Buffer.from(s, 'latin1')];

test('counts Received fields of the header section only', () => {
  assert.equal(countReceivedFields(buf(`${many(3)}Subject: x\r\n\r\n${many(5)}`)), 3);
  assert.equal(countReceivedFields(buf('\r\nReceived: in the body\r\n')), 0, 'content starting with the empty line has no fields');
  assert.equal(countReceivedFields(buf('RECEIVED: a\r\nreceived\t: b\r\nReceived : c\r\n\r\n')), 3);
  assert.equal(countReceivedFields(buf('Received-SPF: pass\r\nX-Received: a\r\nReceivedX: b\r\n  Received: folded\r\n\r\n')), 0);
  assert.equal(countReceivedFields(buf(`${many(2)}`)), 2, 'no empty line: the whole content is the header');
  assert.equal(countReceivedFields([]), 0);
  assert.equal(countReceivedFields(buf(many(500)), 10), 10, 'stops at stopAfter');
});

test('the hop limit: 100 pass, 101 are a loop', () => {
  assert.equal(MAX_RECEIVED_FIELDS, 100);
  assert.equal(hasTooManyHops(buf(`${many(100)}\r\nbody\r\n`)), false);
  assert.equal(hasTooManyHops(buf(`${many(101)}\r\nbody\r\n`)), true);
});

test('property: any chunking gives the same count', () => {
  const line = fc.oneof(
    fc.constantFrom('Received: x', 'received : y', 'RECEIVED:', 'Receive: no', 'Subject: s', ' folded Received: z', 'Received', '\r'),
    fc.string({ maxLength: 12 }).map((s) => s.replace(/[\r\n]/g, '')),
  );
  fc.assert(
    fc.property(fc.array(line, { maxLength: 30 }), fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 10 }), (lines, sizes) => {
      const whole = Buffer.from(lines.join('\r\n') + '\r\n\r\nReceived: body\r\n', 'latin1');
      const pieces: Buffer[] = [];
      for (let i = 0, k = 0; i < whole.length; k++) {
        const n = sizes[k % sizes.length];
        pieces.push(whole.subarray(i, i + n));
        i += n;
      }
      assert.equal(countReceivedFields(pieces), countReceivedFields([whole]));
    }),
    { seed: 1010, numRuns: 300 },
  );
});

test('a looping message whose body went to its body file is refused at its end too (554 5.4.6)', () => {
  const d = new MachineDriver(testMachineConfig({ maxMessageBytes: 1 << 22, isTlsAvailable: false, bodyMemoryBytes: 4096 }));
  const bodyText = `${'z'.repeat(70)}\r\n`.repeat(1000); // past the threshold: spilled
  d.send(`EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n${many(101)}\r\n${bodyText}.\r\n`);
  assert.ok(d.outputs.some((o) => o.type === 'append-body'), 'the body went to the body file');
  assert.equal(d.replyLines().at(-1), '554 5.4.6 Too many hops: mail loop detected');
  assert.equal(d.outputs.some((o) => o.type === 'commit'), false);
});
