// rspamd's /checkv2 reply checked field by field (garbage never throws), the envelope headers it
// is sent (one Rcpt per recipient, UTF-8 as octets, no control characters), and the [rspamd]
// URL's forms. The real rspamd is in test/integration/rspamd-http.test.ts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { parseConfig } from '../config/load.ts';
import { parseRspamdReply, requestHeaders } from './rspamd.ts';

test('rspamd replies: score, required score, action and rule names; errors and garbage', () => {
  const ok = JSON.stringify({ is_skipped: false, score: 15, required_score: 15, action: 'reject', symbols: { GTUBE: { name: 'GTUBE', score: 0 }, 'bad name\r\n': {} } });
  assert.deepEqual(parseRspamdReply(ok), { kind: 'scored', score: 15, required: 15, action: 'reject', symbols: ['GTUBE'] });
  assert.equal(parseRspamdReply('hello').kind, 'error');
  assert.equal(parseRspamdReply('[]').kind, 'error');
  assert.equal(parseRspamdReply('{"score":"1","action":"reject"}').kind, 'error');
  assert.equal(parseRspamdReply('{"score":1,"action":"delete everything"}').kind, 'error');
  assert.deepEqual(parseRspamdReply('{"error":"cannot parse"}'), { kind: 'error', code: 'scanner', reason: 'rspamd: cannot parse' });
  fc.assert(
    fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.json()), (text) => {
      const r = parseRspamdReply(text);
      assert.ok(r.kind === 'scored' || r.kind === 'error');
    }),
    { seed: 11333, numRuns: 300 },
  );
});

test('the envelope as request headers: one Rcpt each, the null sender, UTF-8 as octets, no control characters', () => {
  const h = requestHeaders({ clientAddress: '192.0.2.7', heloName: 'client.example\r\nX: y', sender: '', recipients: ['a@example.test', 'ö@example.test'], queueId: 'Q1', hostname: 'mx.example.test', authUser: null, tls: { protocol: 'TLSv1.3', cipher: 'TLS_AES_128_GCM_SHA256' } });
  assert.deepEqual(h, [
    ['IP', '192.0.2.7'],
    ['Queue-Id', 'Q1'],
    ['MTA-Name', 'mx.example.test'],
    ['From', '<>'],
    ['Rcpt', 'a@example.test'],
    ['Rcpt', Buffer.from('ö@example.test', 'utf8').toString('latin1')],
    ['Helo', 'client.exampleX: y'],
    ['TLS-Version', 'TLSv1.3'],
    ['TLS-Cipher', 'TLS_AES_128_GCM_SHA256'],
  ]);
  assert.doesNotThrow(() => new Headers(h));
});

test('[rspamd] url: http(s) only, no user, query or fragment; a trailing slash dropped', () => {
  assert.equal(parseConfig('[rspamd]\nurl = "http://127.0.0.1:11333/"\n[policy]\nchecks = ["rspamd"]\n', 'r.toml').rspamd.url, 'http://127.0.0.1:11333');
  assert.throws(() => parseConfig('[rspamd]\nurl = "ftp://x"\n', 'r.toml'), /must be an http:\/\/ or https:\/\/ URL/);
  assert.throws(() => parseConfig('[rspamd]\nurl = "http://u:p@x"\n', 'r.toml'), /must not hold a user or password/);
  assert.throws(() => parseConfig('[rspamd]\nurl = "http://x/?a=1"\n', 'r.toml'), /must not hold a query/);
  assert.throws(() => parseConfig('[rspamd]\nurl = "127.0.0.1:11333"\n', 'r.toml'), /is not a URL, e.g. "http:\/\/127.0.0.1:11333"/);
});
