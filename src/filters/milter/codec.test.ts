// The milter codec on recorded bytes: every command we encode, every response we decode, the
// malformed and truncated packets a broken filter sends, and fast-check properties: arbitrary
// bytes never throw, and how a stream is cut into reads never changes the events.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  bodyPackets,
  encodeAbort,
  encodeBody,
  encodeBodyHead,
  encodeConnect,
  encodeData,
  encodeEob,
  encodeEoh,
  encodeHeader,
  encodeHelo,
  encodeMacros,
  encodeMail,
  encodeOptneg,
  encodeQuit,
  encodeQuitNc,
  encodeRcpt,
  CMD,
  MAX_BODY_CHUNK,
  MAX_PACKET_BYTES,
  MilterDecoder,
  OFFERED_PROTOCOL,
  PROTO,
  type DecoderEvent,
} from './codec.ts';

const hex = (b: Buffer): string => b.toString('hex');
/** A packet as the wire has it: length (command byte + data), command, data. */
function pkt(cmd: string, data: Buffer | string = ''): Buffer {
  const d = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(d.length + 1);
  return Buffer.concat([len, Buffer.from(cmd, 'latin1'), d]);
}
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

test('commands: recorded bytes of every command we send', () => {
  assert.equal(hex(encodeOptneg(6, 0x1ff, 0x1ff7ff)), '0000000d4f00000006000001ff001ff7ff');
  assert.equal(OFFERED_PROTOCOL, 0x1ff7ff, 'every flag but SMFIP_RCPT_REJ');
  // The macro command code is one byte, not NUL-terminated (rspamd drops "C\0").
  assert.equal(encodeMacros(CMD.connect, [['j', 'mx.example'], ['{daemon_name}', 'portcullis']]).toString('latin1'), '\0\0\0\x28DCj\0mx.example\0{daemon_name}\0portcullis\0');
  assert.equal(encodeMacros(CMD.eob, []).toString('latin1'), '\0\0\0\x02DE');
  assert.equal(encodeConnect('[192.0.2.1]', '4', 25000, '192.0.2.1').toString('latin1'), '\0\0\0\x1aC[192.0.2.1]\x004\x61\xa8192.0.2.1\0');
  assert.equal(encodeConnect('host.example', '6', 1, '2001:db8::1').toString('latin1'), '\0\0\0\x1dChost.example\x006\x00\x012001:db8::1\0');
  assert.equal(encodeConnect('local', 'L', 0, '/run/sock').toString('latin1'), '\0\0\0\x14Clocal\0L\0\0/run/sock\0');
  assert.equal(encodeConnect('unknown', 'U', 0, '').toString('latin1'), '\0\0\0\x0aCunknown\0U');
  assert.equal(encodeHelo('client.example').toString('latin1'), '\0\0\0\x10Hclient.example\0');
  assert.equal(encodeMail(['<a@b.example>', 'BODY=8BITMIME']).toString('latin1'), '\0\0\0\x1dM<a@b.example>\0BODY=8BITMIME\0');
  assert.equal(encodeMail(['<>']).toString('latin1'), '\0\0\0\x04M<>\0');
  assert.equal(encodeRcpt(['<c@d.example>']).toString('latin1'), '\0\0\0\x0fR<c@d.example>\0');
  assert.equal(encodeData().toString('latin1'), '\0\0\0\x01T');
  assert.equal(encodeHeader('Subject', 'Hi\n\tthere').toString('latin1'), '\0\0\0\x13LSubject\0Hi\n\tthere\0');
  // Header fields go as the octets stored (latin1 strings), 8-bit ones unchanged.
  assert.equal(hex(encodeHeader('Subject', '\xc3\xa9')), '0000000c4c5375626a65637400c3a900');
  assert.equal(encodeEoh().toString('latin1'), '\0\0\0\x01N');
  assert.equal(encodeBody(Buffer.from('Hello.\r\n')).toString('latin1'), '\0\0\0\x09BHello.\r\n');
  assert.equal(encodeEob().toString('latin1'), '\0\0\0\x01E');
  assert.equal(encodeAbort().toString('latin1'), '\0\0\0\x01A');
  assert.equal(encodeQuit().toString('latin1'), '\0\0\0\x01Q');
  assert.equal(encodeQuitNc().toString('latin1'), '\0\0\0\x01K');
  // Security: a NUL inside a string would end the field early.
  assert.equal(encodeHelo('a\0b').toString('latin1'), '\0\0\0\x05Ha b\0');
  assert.equal(encodeMacros(CMD.mail, [['{mail_addr}', 'x\0y']]).toString('latin1'), '\0\0\0\x12DM{mail_addr}\0x y\0');
  assert.equal(encodeConnect('a\0b', '4', 25, '1.2.3.4\0').toString('latin1'), '\0\0\0\x11Ca b\x004\0\x191.2.3.4 \0');
  // Strings that are not octet strings go as UTF-8 (an SMTPUTF8 address in a macro, say).
  assert.equal(hex(encodeMacros(CMD.rcpt, [['{rcpt_addr}', 'jos\u00e9@\u4f8b.example']])), hex(Buffer.concat([Buffer.from([0, 0, 0, 0x20, 0x44, 0x52]), Buffer.from('{rcpt_addr}\0jos\u00e9@\u4f8b.example\0', 'utf8')])));
  assert.equal(hex(encodeRcpt(['<\u00e9@x>'])), hex(Buffer.concat([Buffer.from([0, 0, 0, 0x08, 0x52]), Buffer.from('<\u00e9@x>\0', 'utf8')])));
});

test('body: chunks of at most 65,535 octets; a larger single chunk is refused', () => {
  const body = Buffer.alloc(MAX_BODY_CHUNK * 2 + 10, 0x61);
  const packets = bodyPackets(body);
  assert.deepEqual(packets.map((p) => p.readUInt32BE(0) - 1), [MAX_BODY_CHUNK, MAX_BODY_CHUNK, 10]);
  assert.ok(packets.every((p) => p[4] === CMD.body));
  assert.deepEqual(bodyPackets(Buffer.alloc(0)), []);
  assert.throws(() => encodeBody(Buffer.alloc(MAX_BODY_CHUNK + 1)), RangeError);
  assert.ok(Buffer.concat([encodeBodyHead(8), Buffer.from('Hel'), Buffer.from('lo.\r\n')]).equals(encodeBody(Buffer.from('Hello.\r\n'))), 'a head and its pieces make the same packet');
  assert.throws(() => encodeBodyHead(MAX_BODY_CHUNK + 1), RangeError);
});

function decodeAll(bytes: Buffer): DecoderEvent[] {
  return new MilterDecoder().feed(bytes);
}

test('responses: recorded bytes of every response decode to their events', () => {
  const cases: [Buffer, unknown][] = [
    [pkt('a'), { kind: 'accept' }],
    [pkt('c'), { kind: 'continue' }],
    [pkt('d'), { kind: 'discard' }],
    [pkt('r'), { kind: 'reject' }],
    [pkt('t'), { kind: 'tempfail' }],
    [pkt('p'), { kind: 'progress' }],
    [pkt('s'), { kind: 'skip' }],
    [pkt('f'), { kind: 'connfail' }],
    [pkt('4'), { kind: 'shutdown' }],
    [pkt('y', '554 5.7.1 Gtube pattern\0'), { kind: 'replycode', text: '554 5.7.1 Gtube pattern' }],
    [pkt('y', '550-5.7.1 first\r\n550 5.7.1 second\0'), { kind: 'replycode', text: '550-5.7.1 first\r\n550 5.7.1 second' }],
    // rspamd's answer: version 6, its actions, every no-reply bit.
    [pkt('O', Buffer.concat([u32(6), u32(0x1ff), u32(0xff080)])), { kind: 'optneg', version: 6, actions: 0x1ff, protocol: 0xff080, macros: new Map() }],
    [pkt('O', Buffer.concat([u32(6), u32(0x1), u32(0x2), u32(1), Buffer.from('j {client_addr}\0'), u32(4), Buffer.from('i\0')])), { kind: 'optneg', version: 6, actions: 1, protocol: 2, macros: new Map([[1, 'j {client_addr}'], [4, 'i']]) }],
    [pkt('h', 'X-Spam-Status\0No, score=0.3\0'), { kind: 'addheader', name: 'X-Spam-Status', value: 'No, score=0.3' }],
    [pkt('i', Buffer.concat([u32(1), Buffer.from('DKIM-Signature\0v=1; a=rsa-sha256;\n\tb=abc\0')])), { kind: 'insheader', index: 1, name: 'DKIM-Signature', value: 'v=1; a=rsa-sha256;\n\tb=abc' }],
    [pkt('m', Buffer.concat([u32(2), Buffer.from('Subject\0\0')])), { kind: 'chgheader', index: 2, name: 'Subject', value: '' }],
    [pkt('e', '<new@example.test>\0'), { kind: 'chgfrom', sender: '<new@example.test>', args: '' }],
    [pkt('e', '<new@example.test>\0SIZE=10\0'), { kind: 'chgfrom', sender: '<new@example.test>', args: 'SIZE=10' }],
    [pkt('+', '<added@example.test>\0'), { kind: 'addrcpt', recipient: '<added@example.test>', args: '' }],
    [pkt('2', '<added@example.test>\0NOTIFY=NEVER\0'), { kind: 'addrcpt', recipient: '<added@example.test>', args: 'NOTIFY=NEVER' }],
    [pkt('-', '<gone@example.test>\0'), { kind: 'delrcpt', recipient: '<gone@example.test>' }],
    [pkt('b', 'New body\r\n'), { kind: 'replbody', data: Buffer.from('New body\r\n') }],
    [pkt('q', 'spam\0'), { kind: 'quarantine', reason: 'spam' }],
    [pkt('l', Buffer.concat([u32(2), Buffer.from('{mail_addr}\0')])), { kind: 'setsymlist', stage: 2, macros: '{mail_addr}' }],
  ];
  for (const [bytes, response] of cases) assert.deepEqual(decodeAll(bytes), [{ type: 'response', response }], hex(bytes));
});

test('responses: several in one read (spamass-milter: three headers and continue), in order', () => {
  const bytes = Buffer.concat([pkt('h', 'X-Spam-Status\0No\0'), pkt('h', 'X-Spam-Level\0\0'), pkt('h', 'X-Spam-Checker-Version\0SA\0'), pkt('c')]);
  const events = decodeAll(bytes);
  assert.deepEqual(events.map((e) => (e.type === 'response' ? e.response.kind : e.type)), ['addheader', 'addheader', 'addheader', 'continue']);
});

test('malformed and truncated packets: an error event, never a throw, and the decoder is spent', () => {
  const bad: [Buffer, RegExp][] = [
    [Buffer.from([0, 0, 0, 0]), /length 0/],
    [Buffer.concat([u32(MAX_PACKET_BYTES + 1), Buffer.from('b')]), /over the/],
    [u32(0xffffffff), /over the/],
    [pkt('Z'), /unknown response code 0x5a/],
    [pkt('a', 'x'), /unexpected octets/],
    [pkt('y', 'no terminator'), /REPLYCODE/],
    [pkt('y', '550\0extra\0'), /REPLYCODE/],
    [pkt('O', Buffer.alloc(8)), /needs 12/],
    [pkt('O', Buffer.concat([u32(6), u32(0), u32(0), u32(1), Buffer.from('j')])), /not NUL-terminated/],
    [pkt('O', Buffer.concat([u32(6), u32(0), u32(0), Buffer.from([1, 2])])), /truncated macro list/],
    [pkt('h', 'OnlyName\0'), /ADDHEADER/],
    [pkt('i', Buffer.from([0, 0])), /INSHEADER has no index/],
    [pkt('m', Buffer.concat([u32(1), Buffer.from('Subject\0')])), /CHGHEADER/],
    [pkt('e', ''), /CHGFROM/],
    [pkt('+', 'a\0b\0'), /ADDRCPT/],
    [pkt('-', '<x>'), /DELRCPT/],
    [pkt('q', ''), /QUARANTINE/],
    [pkt('l', Buffer.from([0, 0])), /SETSYMLIST/],
  ];
  for (const [bytes, reason] of bad) {
    const d = new MilterDecoder();
    const events = d.feed(Buffer.concat([bytes, pkt('c')]));
    assert.equal(events.length, 1, hex(bytes));
    const e = events[0];
    assert.ok(e.type === 'error' && reason.test(e.reason), `${hex(bytes)}: ${JSON.stringify(e)}`);
    assert.ok(d.isSpent);
    assert.deepEqual(d.feed(pkt('c')), [], 'nothing after an error is trusted');
  }
  // Truncated: no event yet, the rest completes it.
  const d = new MilterDecoder();
  const whole = pkt('y', '451 4.7.1 later\0');
  assert.deepEqual(d.feed(whole.subarray(0, 3)), []);
  assert.deepEqual(d.feed(whole.subarray(3, 10)), []);
  assert.equal(d.buffered, 10);
  assert.deepEqual(d.feed(whole.subarray(10)), [{ type: 'response', response: { kind: 'replycode', text: '451 4.7.1 later' } }]);
  assert.equal(d.buffered, 0);
});

test('the decoder keeps no reference to the bytes it was fed (the link reuses one read buffer)', () => {
  const stream = Buffer.concat([pkt('c'), pkt('y', '550 5.7.1 no\0'), pkt('i', Buffer.concat([u32(0), Buffer.from('DKIM-Signature\0v=1\0')])), pkt('a')]);
  const expected = new MilterDecoder().feed(Buffer.from(stream));
  for (let cut = 1; cut < stream.length; cut++) {
    const d = new MilterDecoder();
    const scratch = Buffer.alloc(stream.length);
    const events: DecoderEvent[] = [];
    for (let at = 0; at < stream.length; at += cut) {
      const n = stream.copy(scratch, 0, at, Math.min(stream.length, at + cut));
      events.push(...d.feed(scratch.subarray(0, n)));
      scratch.fill(0xee);
    }
    assert.deepEqual(events, expected, `reads of ${cut} octets`);
  }
});

test('property: arbitrary bytes in arbitrary reads never throw, and the chunking never changes the events', () => {
  const packetArb = fc.oneof(
    fc.constantFrom('a', 'c', 'd', 'r', 't', 'p', 's', 'f', '4').map((c) => pkt(c)),
    fc.string({ maxLength: 30 }).map((s) => pkt('y', `550 ${s.replace(/\0/g, '')}\0`)),
    fc.tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 20 })).map(([n, v]) => pkt('h', `${n.replace(/\0/g, '')}\0${v.replace(/\0/g, '')}\0`)),
    fc.uint8Array({ maxLength: 200 }).map((b) => pkt('b', Buffer.from(b))),
    fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
  );
  fc.assert(
    fc.property(fc.array(packetArb, { maxLength: 12 }), fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 }), (packets, cuts) => {
      const stream = Buffer.concat(packets);
      const whole = new MilterDecoder().feed(stream);
      const d = new MilterDecoder();
      const pieces: DecoderEvent[] = [];
      let at = 0;
      let i = 0;
      while (at < stream.length) {
        const n = cuts[i++ % cuts.length];
        pieces.push(...d.feed(stream.subarray(at, at + n)));
        at += n;
      }
      assert.deepEqual(pieces, whole);
      // At most one error, and it is last.
      const errors = whole.filter((e) => e.type === 'error').length;
      assert.ok(errors <= 1 && (errors === 0 || whole[whole.length - 1].type === 'error'));
    }),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      new MilterDecoder().feed(Buffer.from(bytes));
    }),
    { numRuns: 1000 },
  );
});

test('protocol flags: the names match libmilter\'s values', () => {
  assert.equal(PROTO.nrHeader | PROTO.nrConnect | PROTO.nrHelo | PROTO.nrMail | PROTO.nrRcpt | PROTO.nrData | PROTO.nrUnknown | PROTO.nrEoh | PROTO.nrBody, 0xff080);
  assert.equal(PROTO.skip, 0x400);
  assert.equal(PROTO.headerLeadingSpace, 0x100000);
});
