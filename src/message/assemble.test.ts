// Message assembly and header-section work: round trips, edits, and where the header ends.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { contentChunks } from './accepted.ts';
import { finishMessage, prepareMessage, type AssembleInput } from './assemble.ts';
import { formatFields, headerSection, parseFields, splitAt } from './header.ts';

function input(content: string, over: Partial<AssembleInput> = {}): AssembleInput {
  return {
    queueId: 'Q1', sessionId: 'S', nowMs: Date.UTC(2026, 11, 1), hostname: 'mx.example.test',
    client: { address: '192.0.2.1', port: 1, heloName: 'c.example', isEsmtp: true, isTls: false },
    reversePath: 'a@c.example', bodyType: '7BIT', smtputf8: false,
    recipients: [{ address: 'alice@example.test' }, { address: 'bob@example.test' }],
    addedFields: [], content: { kind: 'memory', chunks: [Buffer.from(content, 'latin1')] }, ...over,
  };
}

const text = (m: NonNullable<ReturnType<typeof finishMessage>>): string => Buffer.concat(contentChunks(m)).toString('latin1');

test('header section: ends after the empty line; no empty line: all header; leading empty line: none', () => {
  assert.deepEqual(headerSection([Buffer.from('A: 1\r\nB: 2\r\n\r\nbody\r\n')]), { bytes: 14, hasSeparator: true });
  assert.deepEqual(headerSection([Buffer.from('A: 1\r\n'), Buffer.from('\r\nbody\r\n')]), { bytes: 8, hasSeparator: true });
  assert.deepEqual(headerSection([Buffer.from('A: 1\r\n')]), { bytes: 6, hasSeparator: false });
  assert.deepEqual(headerSection([Buffer.from('\r\nbody\r\n')]), { bytes: 0, hasSeparator: false });
});

test('parseFields and formatFields round-trip any header section byte for byte, folds included', () => {
  const line = fc.stringMatching(/^[A-Za-z-]{1,10}: [ -~]{0,20}(\r\n[ \t][ -~]{1,10})?$/);
  fc.assert(
    fc.property(fc.array(line, { maxLength: 8 }), fc.boolean(), (lines, sep) => {
      if (lines.length === 0) return;
      const header = Buffer.from(`${lines.join('\r\n')}\r\n${sep ? '\r\n' : ''}`, 'latin1');
      assert.deepEqual(formatFields(parseFields(header), sep), header);
    }),
    { seed: 4242, numRuns: 200 },
  );
});

test('splitAt splits across chunk boundaries as views', () => {
  const chunks = [Buffer.from('abc'), Buffer.from('def'), Buffer.from('g')];
  for (let i = 0; i <= 7; i++) {
    const { head, rest } = splitAt(chunks, i);
    assert.equal(Buffer.concat(head).toString(), 'abcdefg'.slice(0, i));
    assert.equal(Buffer.concat(rest).toString(), 'abcdefg'.slice(i));
  }
});

test('assembly with no edits: policy fields above Received above the message, body untouched', () => {
  const m = finishMessage(prepareMessage(input('Subject: x\r\n\r\nbody\r\n', { addedFields: ['Received-SPF: pass'] })))!;
  assert.match(text(m), /^Received-SPF: pass\r\nReceived: from c\.example \(\[192\.0\.2\.1\]\)\r\n\tby mx\.example\.test \(Portcullis\) with ESMTP id Q1\r\n\t\(session S\); Tue, 1 Dec 2026 00:00:00 \+0000\r\nSubject: x\r\n\r\nbody\r\n$/);
  assert.equal(m.size, Buffer.byteLength(text(m)));
});

test('edits: add, change and delete by name and index; recipients; quarantine; in check order', () => {
  const prepared = prepareMessage(input('Subject: one\r\nX-A: 1\r\nx-a: 2\r\n\r\nbody\r\n'));
  const m = finishMessage(prepared, [
    { headers: [{ op: 'add', field: 'X-Spam: yes' }, { op: 'change', name: 'subject', index: 1, value: 'two' }], quarantine: 'spam' },
    { headers: [{ op: 'delete', name: 'X-A', index: 2 }, { op: 'delete', name: 'X-Missing', index: 1 }], recipients: [{ op: 'delete', address: 'bob@EXAMPLE.test' }, { op: 'add', address: 'carol@example.test' }], quarantine: 'later' },
  ])!;
  assert.match(text(m), /^X-Spam: yes\r\nReceived: .*\r\nSubject: two\r\nX-A: 1\r\n\r\nbody\r\n$/s);
  assert.deepEqual(m.recipients.map((r) => r.address), ['alice@example.test', 'carol@example.test']);
  assert.equal(m.quarantine, 'spam');
  assert.equal(m.size, Buffer.byteLength(text(m)));
});

test('Security: an added or changed field stays one field (no CR or LF that is not a fold)', () => {
  const m = finishMessage(prepareMessage(input('Subject: one\r\n\r\nbody\r\n')), [
    { headers: [{ op: 'add', field: 'X-A: 1\r\nBcc: victim@example.org' }, { op: 'change', name: 'Subject', index: 1, value: 'two\nX-Evil: 1' }] },
  ])!;
  const header = text(m).split('\r\n\r\n')[0];
  assert.doesNotMatch(header, /\r\n(Bcc|X-Evil):/);
  assert.match(header, /^X-A: 1 Bcc: victim@example\.org\r\n/);
});

test('edits on a message without a body, and on one whose content starts with an empty line', () => {
  const noBody = finishMessage(prepareMessage(input('Subject: x\r\n')), [{ headers: [{ op: 'add', field: 'X-A: 1' }] }])!;
  assert.match(text(noBody), /^X-A: 1\r\nReceived: [^]*\r\nSubject: x\r\n$/);
  const noHeader = finishMessage(prepareMessage(input('\r\nbody\r\n')), [{ headers: [{ op: 'add', field: 'X-A: 1' }] }])!;
  assert.match(text(noHeader), /^X-A: 1\r\nReceived: [^]*\r\n\r\nbody\r\n$/);
});

test('removing every recipient leaves nothing to store', () => {
  assert.equal(finishMessage(prepareMessage(input('S: x\r\n\r\nb\r\n')), [{ recipients: [{ op: 'delete', address: 'alice@example.test' }, { op: 'delete', address: 'bob@example.test' }] }]), null);
});

test('Security: edited text cannot become a line end through its encoding (U+010D / U+010A)', () => {
  const edits = [{ headers: [{ op: 'change' as const, name: 'Subject', index: 1, value: 'tagged \u010d\u010a\u010d\u010aX' }, { op: 'add' as const, field: 'X-Note: caf\u00e9 \u010d\u010aBcc: x@evil.example' }] }];
  for (const smtputf8 of [false, true]) {
    const m = finishMessage(prepareMessage(input('Subject: one\r\nFrom: a@c.example\r\n\r\nbody\r\n', { smtputf8 })), edits)!;
    const stored = text(m);
    const header = stored.split('\r\n\r\n')[0];
    assert.match(header, /\r\nFrom: a@c\.example$/, `smtputf8=${smtputf8}: From stays in the header`);
    assert.doesNotMatch(header, /\r\n(Bcc|X):/);
    assert.ok(stored.endsWith('\r\n\r\nbody\r\n'));
    if (smtputf8) assert.ok(Buffer.concat(contentChunks(m)).includes(Buffer.from('caf\u00e9', 'utf8')), 'UTF-8 in an SMTPUTF8 message');
    else assert.match(header, /^X-Note: caf\? \?\?Bcc: x@evil\.example\r\n/);
  }
});

test('recipient edits: a bad address is not added; the local part is compared case-sensitively', () => {
  const m = finishMessage(prepareMessage(input('S: x\r\n\r\nb\r\n')), [
    { recipients: [{ op: 'add', address: 'bad address@x.example' }, { op: 'add', address: 'x@y\r\nRCPT' }, { op: 'delete', address: 'ALICE@EXAMPLE.TEST' }, { op: 'delete', address: 'bob@EXAMPLE.test' }] },
  ])!;
  assert.deepEqual(m.recipients.map((r) => r.address), ['alice@example.test']);
});

test('a message without a header section is recognised however its first CRLF is cut', () => {
  assert.deepEqual(headerSection([Buffer.from('\r'), Buffer.from('\nbody\r\n\r\nmore\r\n')]), { bytes: 0, hasSeparator: false });
  assert.deepEqual(headerSection([Buffer.from('\r\n'), Buffer.from('x')]), { bytes: 0, hasSeparator: false });
});

test('filter edits: insert at an index keeps a valid fold and refolds a broken one; sender, body (made canonical) and discard', () => {
  const prepared = prepareMessage(input('Subject: Hi\r\nFrom: a@c.example\r\n\r\nbody\r\n'));
  const m = finishMessage(prepared, [
    {
      headers: [
        { op: 'insert', index: 0, field: 'DKIM-Signature: v=1;\r\n\tb=abc' },
        { op: 'insert', index: 99, field: 'X-Last: 1' },
        { op: 'insert', index: 2, field: 'X-Bad: a\r\nInjected: yes' },
        { op: 'insert', index: 1, field: 'not a field' },
      ],
      sender: 'new@c.example',
      body: [Buffer.from('line1\nline2\rline3')],
    },
  ]);
  assert.ok(m !== null);
  const t = text(m);
  assert.match(t, /^DKIM-Signature: v=1;\r\n\tb=abc\r\nReceived: /, 'the filter\'s fold kept');
  assert.match(t, /\r\nX-Bad: a Injected: yes\r\n/, 'a line end that is no fold cannot start a field of its own');
  assert.doesNotMatch(t, /not a field/);
  assert.match(t, /From: a@c\.example\r\nX-Last: 1\r\n\r\nline1\r\nline2\r\nline3\r\n$/);
  assert.equal(m.reversePath, 'new@c.example');
  assert.equal(m.size, t.length);
  assert.equal(finishMessage(prepared, [{ sender: 'not an address' }])?.reversePath, 'a@c.example', 'an invalid sender is ignored');
  assert.equal(finishMessage(prepared, [{ sender: '' }])?.reversePath, '', 'the null sender is allowed');
  assert.equal(finishMessage(prepared, [{ headers: [{ op: 'add', field: 'X: 1' }] }, { discard: true }]), null);
  // A message without a body gets its empty line before a new body.
  const bare = finishMessage(prepareMessage(input('Subject: Hi\r\n')), [{ body: [Buffer.from('new\r\n')] }]);
  assert.match(text(bare!), /Subject: Hi\r\n\r\nnew\r\n$/);
});
