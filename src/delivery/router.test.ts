// Routing: each address to its destination (own entry, local, default, Postmaster), aliases
// expanded (several recipients from one, self-copies, ORCPT kept), one job per destination.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../config/load.ts';
import { expandAliases, Router } from './router.ts';

function router(toml: string): Router {
  const c = parseConfig(toml, 't.toml');
  return new Router({ routes: c.routes, aliases: c.aliases, localDomains: c.domains.local, hostname: c.smtp.hostname });
}

const TOML =
  '[smtp]\nhostname = "mx.example.test"\n[domains]\nlocal = ["example.test", "other.test"]\n' +
  '[routes]\ndefault = "mx"\nlocal = "maildir:/srv/mail"\n"example.test" = "lmtp:127.0.0.1:24"\n"partner.example" = { via = "smtp:[10.0.0.5]:25", tls = "required" }\n"blocked.example" = "refuse"\n' +
  '[aliases]\n"team@example.test" = ["alice@example.test", "bob@partner.example", "carol@gmail.example"]\n"carol@other.test" = ["carol@other.test", "archive@other.test"]\n"old@other.test" = "team@example.test"\n';

test('each address to its destination', () => {
  const r = router(TOML);
  assert.deepEqual(r.route('alice@Example.Test'), { key: 'lmtp:[127.0.0.1]:24', route: { kind: 'lmtp', host: '127.0.0.1', port: 24 }, domain: 'example.test' });
  assert.equal(r.route('x@other.test').key, 'maildir:/srv/mail');
  assert.equal(r.route('x@gmail.example').key, 'mx:gmail.example');
  assert.equal(r.route('x@partner.example').key, 'smtp:[10.0.0.5]:25;tls=required');
  assert.equal(r.route('x@blocked.example').route.kind, 'refuse');
  assert.equal(r.route('Postmaster').key, 'maildir:/srv/mail', 'the bare Postmaster is delivered locally (RFC 5321 4.5.1)');
  assert.deepEqual(r.expand('postmaster'), ['postmaster@mx.example.test']);
  assert.equal(r.isRoutable('x@blocked.example'), false);
  assert.equal(r.isRoutable('x@gmail.example'), true);
});

test('aliases: one recipient becomes several; itself kept; nested; ORCPT keeps the original', () => {
  const r = router(TOML);
  assert.deepEqual(r.expand('TEAM@example.test'), ['alice@example.test', 'bob@partner.example', 'carol@gmail.example']);
  assert.deepEqual(r.expand('carol@other.test'), ['carol@other.test', 'archive@other.test']);
  assert.deepEqual(r.expand('old@other.test'), ['alice@example.test', 'bob@partner.example', 'carol@gmail.example']);
  const expanded = r.expandRecipients([
    { index: 0, address: 'team@example.test' },
    { index: 1, address: 'alice@example.test', notify: ['FAILURE'] },
    { index: 2, address: 'carol@other.test', orcpt: { addrType: 'rfc822', address: 'c@o.test' } },
  ]);
  assert.deepEqual(expanded, [
    { index: 0, address: 'alice@example.test', original: 'team@example.test', orcpt: { addrType: 'rfc822', address: 'team@example.test' } },
    { index: 0, address: 'bob@partner.example', original: 'team@example.test', orcpt: { addrType: 'rfc822', address: 'team@example.test' } },
    { index: 0, address: 'carol@gmail.example', original: 'team@example.test', orcpt: { addrType: 'rfc822', address: 'team@example.test' } },
    { index: 2, address: 'carol@other.test', original: 'carol@other.test', orcpt: { addrType: 'rfc822', address: 'c@o.test' } },
    { index: 2, address: 'archive@other.test', original: 'carol@other.test', orcpt: { addrType: 'rfc822', address: 'c@o.test' } },
  ], 'alice, reached twice, is delivered once');
});

test('group: one job per destination, in order; refused recipients apart with 5.4.4', () => {
  const r = router(TOML);
  const routed = r.group(r.expandRecipients([
    { index: 0, address: 'a@gmail.example' },
    { index: 1, address: 'x@example.test' },
    { index: 2, address: 'b@gmail.example' },
    { index: 3, address: 'c@yahoo.example' },
    { index: 4, address: 'y@example.test' },
    { index: 5, address: 'z@blocked.example' },
  ]));
  assert.deepEqual(routed.jobs.map((j) => [j.destination.key, j.recipients.map((x) => x.index)]), [
    ['mx:gmail.example', [0, 2]],
    ['lmtp:[127.0.0.1]:24', [1, 4]],
    ['mx:yahoo.example', [3]],
  ]);
  assert.equal(routed.refused.length, 1);
  assert.equal(routed.refused[0].recipient.index, 5);
  assert.equal(routed.refused[0].result.status, 'failed');
  assert.equal(routed.refused[0].result.reply.enhanced, '5.4.4');
});

test('expandAliases: loops found wherever they start; bounded expansion', () => {
  const loop = expandAliases({ 'a@x': ['b@x'], 'b@x': ['c@x', 'd@x'], 'c@x': ['b@x'] });
  assert.equal(loop.ok, false);
  const wide: Record<string, string[]> = { 'all@x': Array.from({ length: 40 }, (_, i) => `g${i}@x`) };
  for (let i = 0; i < 40; i++) wide[`g${i}@x`] = Array.from({ length: 30 }, (_, j) => `u${i}.${j}@x`);
  const big = expandAliases(wide);
  assert.ok(!big.ok && big.problems.some((p) => p.kind === 'expansion'), '1200 addresses is past the bound');
});
