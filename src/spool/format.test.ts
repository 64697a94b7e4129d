// The record frame alone, in memory: exact layout, decode(encode(x)) = x, and that no cut or
// single-byte change ever decodes as a different message.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { makeEnvelope } from '../../test/helpers/spool-crash-child.ts';
import { checkFileHeader, decodeRecord, encodeRecord, FILE_HEADER, RECORD_MAGIC } from './format.ts';
import type { Envelope } from './types.ts';

const SEED = 0x5f00_1;
const RUNS = 200;

function frame(envelope: Envelope, body: Buffer[]): Buffer {
  return Buffer.concat(encodeRecord(envelope, body).chunks);
}

const bodyArb = fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 4 }).map((parts) => parts.map((p) => Buffer.from(p)));
const envelopeArb = fc.record({
  queueId: fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
  reversePath: fc.string({ maxLength: 80, unit: 'binary' }),
  heloName: fc.option(fc.string({ maxLength: 40, unit: 'binary' })),
  recipients: fc.array(fc.string({ maxLength: 60, unit: 'binary' }), { minLength: 1, maxLength: 5 }),
});

function buildEnvelope(fields: {
  queueId: string;
  reversePath: string;
  heloName: string | null;
  recipients: string[];
}, size: number): Envelope {
  const base = makeEnvelope(fields.queueId, size);
  return {
    ...base,
    reversePath: fields.reversePath,
    client: { ...base.client, heloName: fields.heloName },
    recipients: fields.recipients.map((address) => ({ address })),
  };
}

describe('record format', () => {
  test('byte layout: magic, lengths, header CRC, envelope JSON, body, CRC of all before it', () => {
    const envelope = makeEnvelope('q1', 5);
    const bytes = frame(envelope, [Buffer.from('he'), Buffer.from('llo')]);
    const json = Buffer.from(JSON.stringify(envelope));
    assert.equal(bytes.readUInt32BE(0), RECORD_MAGIC);
    assert.equal(bytes.subarray(0, 4).toString('latin1'), 'PCR1');
    assert.equal(bytes.readUInt32BE(4), json.length);
    assert.equal(bytes.readUInt32BE(8), 5);
    assert.equal(bytes.readUInt32BE(12), crc32(bytes.subarray(0, 12)));
    assert.ok(bytes.subarray(16, 16 + json.length).equals(json));
    assert.equal(bytes.toString('latin1', 16 + json.length, 21 + json.length), 'hello');
    assert.equal(bytes.length, 16 + json.length + 5 + 4);
    assert.equal(bytes.readUInt32BE(bytes.length - 4), crc32(bytes.subarray(0, bytes.length - 4)));
    assert.equal(FILE_HEADER.toString('latin1'), 'PORTCULLIS-SPOOL 1\n');
  });

  test('the body buffers are passed through, not copied', () => {
    const body = [Buffer.from('abc'), Buffer.from('def')];
    const { chunks } = encodeRecord(makeEnvelope('q', 6), body);
    assert.equal(chunks[2], body[0]);
    assert.equal(chunks[3], body[1]);
  });

  test('decode(encode(x)) returns x, for any envelope strings and body chunking', () => {
    fc.assert(
      fc.property(envelopeArb, bodyArb, (fields, body) => {
        const size = body.reduce((n, b) => n + b.length, 0);
        const envelope = buildEnvelope(fields, size);
        const bytes = frame(envelope, body);
        const decoded = decodeRecord(bytes, 0);
        assert.equal(decoded.kind, 'record');
        if (decoded.kind !== 'record') return;
        assert.deepEqual(decoded.envelope, envelope);
        assert.ok(decoded.body.equals(Buffer.concat(body)));
        assert.equal(decoded.end, bytes.length);
        assert.deepEqual(decodeRecord(bytes, decoded.end), { kind: 'end' });
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  test('every proper prefix of a record is torn, never a record', () => {
    const bytes = frame(makeEnvelope('q', 40), [Buffer.alloc(40, 'x')]);
    for (let cut = 1; cut < bytes.length; cut++) {
      assert.equal(decodeRecord(bytes.subarray(0, cut), 0).kind, 'torn', `cut at ${cut}`);
    }
  });

  test('any single changed byte is detected', () => {
    fc.assert(
      fc.property(envelopeArb, bodyArb, fc.nat(), fc.integer({ min: 1, max: 255 }), (fields, body, at, flip) => {
        const size = body.reduce((n, b) => n + b.length, 0);
        const bytes = frame(buildEnvelope(fields, size), body);
        const index = at % bytes.length;
        bytes[index] ^= flip;
        assert.notEqual(decodeRecord(bytes, 0).kind, 'record', `byte ${index} ^ ${flip}`);
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  test('arbitrary bytes never throw and never decode as a record', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        assert.notEqual(decodeRecord(Buffer.from(bytes), 0).kind, 'record');
      }),
      { seed: SEED, numRuns: RUNS },
    );
  });

  test('a record whose checksum holds but whose envelope lies about the size is corrupt', () => {
    const envelope = makeEnvelope('q', 3);
    const bytes = frame(envelope, [Buffer.from('abc')]);
    // Rebuild with a consistent CRC but a wrong size inside the JSON.
    const json = Buffer.from(JSON.stringify({ ...envelope, size: 4 }));
    const header = Buffer.alloc(16);
    header.writeUInt32BE(RECORD_MAGIC, 0);
    header.writeUInt32BE(json.length, 4);
    header.writeUInt32BE(3, 8);
    header.writeUInt32BE(crc32(header.subarray(0, 12)), 12);
    const payload = Buffer.concat([header, json, Buffer.from('abc')]);
    const trailer = Buffer.alloc(4);
    trailer.writeUInt32BE(crc32(payload), 0);
    const forged = Buffer.concat([payload, trailer]);
    assert.equal(decodeRecord(bytes, 0).kind, 'record');
    assert.deepEqual(decodeRecord(forged, 0), {
      kind: 'corrupt',
      reason: 'envelope size differs from body length',
      end: forged.length,
    });
  });

  test('encode refuses what decode would refuse', () => {
    assert.throws(() => encodeRecord(makeEnvelope('a b', 0), []), { code: 'SPOOL_BAD_MESSAGE' });
    assert.throws(() => encodeRecord(makeEnvelope('q', 1), []), { code: 'SPOOL_BAD_MESSAGE' });
    assert.throws(() => encodeRecord({ ...makeEnvelope('q', 0), version: 2 as 1 }, []), { code: 'SPOOL_BAD_MESSAGE' });
  });

  test('file header check', () => {
    assert.deepEqual(checkFileHeader(Buffer.from('PORTCULLIS-SPOOL 1\nrest')), { kind: 'ok' });
    assert.deepEqual(checkFileHeader(Buffer.from('PORTCULLIS-SP')), { kind: 'torn' });
    assert.deepEqual(checkFileHeader(Buffer.alloc(0)), { kind: 'torn' });
    assert.deepEqual(checkFileHeader(Buffer.from('PORTCULLIS-SPOOL 2\n')), { kind: 'foreign' });
    assert.deepEqual(checkFileHeader(Buffer.from('From ')), { kind: 'foreign' });
  });
});
