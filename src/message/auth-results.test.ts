// Forged Authentication-Results fields under our name are renamed (RFC 8601 5), whatever the
// chunking of the message; other fields and the body are left byte for byte.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { authservIdOf, renameForgedAuthResults } from './auth-results.ts';

const ID = 'mx.example.test';

function run(message: string, cuts: number[] = []): string {
  const bytes = Buffer.from(message, 'latin1');
  const chunks: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    chunks.push(bytes.subarray(from, cut));
    from = cut;
  }
  chunks.push(bytes.subarray(from));
  return Buffer.concat(renameForgedAuthResults(chunks, ID) as Buffer[]).toString('latin1');
}

const FORGED =
  'From: a@bank.example\r\n' +
  'Authentication-Results: MX.Example.Test; spf=pass smtp.mailfrom=bank.example\r\n' +
  'authentication-results :  (a (nested) comment)\r\n mx.example.test; dkim=pass\r\n' +
  'Authentication-Results: other.example; spf=fail\r\n' +
  'Subject: Authentication-Results: mx.example.test; spf=pass\r\n' +
  '\r\n' +
  'Authentication-Results: mx.example.test; spf=pass (in the body: left alone)\r\n';

test('authserv-id: after CFWS, up to ";" or space', () => {
  assert.equal(authservIdOf(' mx.example.test; spf=pass'), 'mx.example.test');
  assert.equal(authservIdOf(' (c (d) \\) e) MX.example.TEST 1; none'), 'mx.example.test');
  assert.equal(authservIdOf('\r\n\tmx.example.test;'), 'mx.example.test');
  assert.equal(authservIdOf(' ;'), '');
});

test('fields claiming our authserv-id are renamed; others, look-alikes in other fields and the body are not', () => {
  assert.equal(
    run(FORGED),
    'From: a@bank.example\r\n' +
      'X-Original-Authentication-Results: MX.Example.Test; spf=pass smtp.mailfrom=bank.example\r\n' +
      'X-Original-authentication-results :  (a (nested) comment)\r\n mx.example.test; dkim=pass\r\n' +
      'Authentication-Results: other.example; spf=fail\r\n' +
      'Subject: Authentication-Results: mx.example.test; spf=pass\r\n' +
      '\r\n' +
      'Authentication-Results: mx.example.test; spf=pass (in the body: left alone)\r\n',
  );
});

test('a message without such a field comes back as the same chunks', () => {
  const chunks = [Buffer.from('Subject: hi\r\n\r\nbody\r\n')];
  assert.equal(renameForgedAuthResults(chunks, ID), chunks);
  const noHeader = [Buffer.from('\r\nAuthentication-Results: mx.example.test; spf=pass\r\n')];
  assert.equal(renameForgedAuthResults(noHeader, ID), noHeader, 'no header section: the body is not touched');
});

test('property: any chunking gives the same result', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: FORGED.length - 1 }), { maxLength: 8 }), (cuts) => {
      assert.equal(run(FORGED, [...new Set(cuts)]), run(FORGED));
    }),
  );
});

test('Security: a quoted authserv-id naming us is renamed too (RFC 8601 2.2: a value may be a quoted-string)', () => {
  assert.equal(authservIdOf(' "MX.Example.Test"; spf=pass'), 'mx.example.test');
  assert.equal(authservIdOf(' (c) "mx\\.example.test" 1; spf=pass'), 'mx.example.test');
  const out = Buffer.concat(renameForgedAuthResults([Buffer.from('Authentication-Results: "mx.example.test"; spf=pass\r\nSubject: x\r\n\r\nbody\r\n')], 'mx.example.test') as Buffer[]).toString();
  assert.match(out, /^X-Original-Authentication-Results: "mx\.example\.test"; spf=pass\r\n/);
});
