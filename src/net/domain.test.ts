// The three host-name rules and their named limits (see domain.ts): where they agree, where they
// differ on purpose (255 vs 253, "_"), and a property over generated domains.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { hostNameProblem, isDnsName, isFqdn, isSmtpDomain, MAX_DNS_NAME_CHARS, MAX_LABEL_OCTETS, MAX_SMTP_DOMAIN_OCTETS } from './domain.ts';

const SEED = 20261201;

/** A name of exactly `chars` characters made of 63-octet labels (and a shorter last one). */
function nameOf(chars: number): string {
  const labels: string[] = [];
  let left = chars;
  while (left > 0) {
    const n = Math.min(MAX_LABEL_OCTETS, left === MAX_LABEL_OCTETS + 1 ? MAX_LABEL_OCTETS - 1 : left);
    labels.push('a'.repeat(n));
    left -= n + 1;
  }
  const name = labels.join('.');
  assert.equal(name.length, chars);
  return name;
}

test('the limits: 63 per label everywhere; 255 octets in SMTP, 253 characters in DNS', () => {
  assert.equal(MAX_LABEL_OCTETS, 63);
  assert.equal(MAX_SMTP_DOMAIN_OCTETS, 255);
  assert.equal(MAX_DNS_NAME_CHARS, 253);
  const label64 = `${'a'.repeat(64)}.example`;
  assert.ok(!isSmtpDomain(label64, null));
  assert.deepEqual(hostNameProblem(label64), { kind: 'bad-label', label: 'a'.repeat(64) });
  assert.ok(!isDnsName(label64));
  for (const chars of [253, 254, 255, 256]) {
    const name = nameOf(chars);
    assert.equal(isSmtpDomain(name, null), chars <= 255, `SMTP ${chars}`);
    assert.equal(hostNameProblem(name) === null, chars <= 253, `host name ${chars}`);
    assert.equal(isDnsName(name), chars <= 253, `DNS ${chars}`);
  }
});

test('"_" is a DNS name character, never a host-name or SMTP one; hyphens never end a host label', () => {
  assert.ok(isDnsName('_spf.example.test', 2));
  assert.ok(!isSmtpDomain('_spf.example.test', null));
  assert.deepEqual(hostNameProblem('_spf.example.test'), { kind: 'bad-label', label: '_spf' });
  assert.ok(!isSmtpDomain('-a.example', null));
  assert.ok(!isSmtpDomain('a-.example', null));
  assert.ok(isSmtpDomain('a-b.example', null));
  assert.ok(!isFqdn('a-.example'));
});

test('host names: FQDNs, bare words, numeric top labels, a trailing dot', () => {
  assert.ok(isFqdn('mail.example.test'));
  assert.ok(isFqdn('mail.example.test.'));
  assert.ok(!isFqdn('localhost'));
  assert.ok(!isFqdn('10.0.0.1'));
  assert.deepEqual(hostNameProblem('10.0.0'), { kind: 'numeric-top-label' });
  assert.deepEqual(hostNameProblem('a..b'), { kind: 'empty-label' });
  assert.deepEqual(hostNameProblem(''), { kind: 'empty' });
  assert.ok(isDnsName('localhost'));
  assert.ok(!isDnsName('localhost', 2));
  assert.ok(!isDnsName('a b.example'));
  assert.ok(!isDnsName('a.example\r\n'));
});

test('SMTP domains: U-labels only with a non-ASCII rule, counted in UTF-8 octets', () => {
  const allowAll = (code: number): boolean => code > 0x9f;
  assert.ok(!isSmtpDomain('bücher.example', null));
  assert.ok(isSmtpDomain('bücher.example', allowAll));
  // 120 two-octet characters, two dots and 13 letters: 255 octets, though only 135 characters.
  const long = `${'ü'.repeat(60)}.${'ü'.repeat(60)}.${'a'.repeat(13)}`;
  assert.equal(Buffer.byteLength(long), 255);
  assert.ok(isSmtpDomain(long, allowAll));
  assert.ok(!isSmtpDomain(`${long}a`, allowAll));
});

test('property: every generated domain is a valid name under all three rules when it fits DNS', () => {
  fc.assert(
    fc.property(fc.domain(), (d) => {
      const fits = d.length <= MAX_DNS_NAME_CHARS;
      assert.equal(isSmtpDomain(d, null), true, d);
      assert.equal(isDnsName(d), fits, d);
      if (!/\.\d+$/.test(d)) assert.equal(hostNameProblem(d) === null, fits, d);
    }),
    { seed: SEED, numRuns: 1000 },
  );
});
