// BATV prvs tags: the format the draft gives, signing only what is ours, each verification result
// (valid, expired, bad signature, unknown key, malformed, untagged), rotation with two keys, the
// day-number wrap at 1000, stripping, and key files. fast-check: sign then verify is valid for any
// signable address, and any one-character change to a tag is never valid.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { batvPolicy, BatvKeyError, loadBatvKeys, signReversePath, stripBatvTag, verifyBatvAddress, type BatvKey, type BatvPolicy } from './batv.ts';

const SEED = 20261202;
const DAY = 86_400_000;
const NOW = Date.UTC(2026, 11, 1, 23, 0, 0); // day 20788
const K0: BatvKey = { id: 0, secret: Buffer.from('0123456789abcdef0123456789abcdef') };
const K1: BatvKey = { id: 1, secret: Buffer.from('fedcba9876543210fedcba9876543210') };

function policy(keys: BatvKey[] = [K0], extra: Partial<{ exceptions: string[]; maxAgeDays: number }> = {}): BatvPolicy {
  return batvPolicy({ domains: ['Example.COM'], maxAgeSeconds: (extra.maxAgeDays ?? 7) * 86_400, exceptions: extra.exceptions ?? ['lists@example.com'] }, keys);
}

test('batv: sign gives prvs=KDDDSSSSSS=local@domain with the expiry day modulo 1000', () => {
  const tagged = signReversePath('alice@example.com', policy(), NOW);
  const m = /^prvs=(\d)(\d{3})([0-9a-f]{6})=alice@example\.com$/.exec(tagged);
  assert.ok(m, tagged);
  assert.equal(m[1], '0');
  assert.equal(Number(m[2]), (Math.floor(NOW / DAY) + 7) % 1000);
  assert.equal(verifyBatvAddress(tagged, policy(), NOW).kind, 'valid');
  assert.equal(stripBatvTag(tagged), 'alice@example.com');
});

test('batv: only addresses of BATV domains are signed; null path, exceptions, tagged and quoted ones are not', () => {
  const p = policy();
  assert.equal(signReversePath('', p, NOW), '');
  assert.equal(signReversePath('bob@other.example', p, NOW), 'bob@other.example');
  assert.equal(signReversePath('Lists@Example.com', p, NOW), 'Lists@Example.com', 'exceptions compare case-insensitively');
  const once = signReversePath('alice@EXAMPLE.com', p, NOW);
  assert.match(once, /^prvs=/, 'domain case does not matter');
  assert.equal(signReversePath(once, p, NOW), once, 'never tagged twice');
  assert.equal(signReversePath('"a b"@example.com', p, NOW), '"a b"@example.com');
  const long = `${'x'.repeat(49)}@example.com`;
  assert.equal(signReversePath(long, p, NOW), long, 'no room for the tag within 64 octets');
  assert.match(signReversePath(`${'x'.repeat(48)}@example.com`, p, NOW), /^prvs=/);
  assert.equal(signReversePath('alice@example.com', batvPolicy({ domains: ['example.com'], maxAgeSeconds: 7 * 86_400, exceptions: [] }, []), NOW), 'alice@example.com', 'no key, no tag');
});

test('batv: a tag is valid until the end of its expiry day, then expired', () => {
  const p = policy();
  const tagged = signReversePath('alice@example.com', p, NOW);
  for (let d = 0; d <= 7; d++) assert.equal(verifyBatvAddress(tagged, p, NOW + d * DAY).kind, 'valid', `day +${d}`);
  const endOfExpiryDay = (Math.floor(NOW / DAY) + 8) * DAY - 1;
  assert.equal(verifyBatvAddress(tagged, p, endOfExpiryDay).kind, 'valid');
  assert.equal(verifyBatvAddress(tagged, p, endOfExpiryDay + 1).kind, 'expired');
  assert.equal(verifyBatvAddress(tagged, p, NOW + 400 * DAY).kind, 'expired');
  assert.equal(verifyBatvAddress(tagged, p, NOW - 1 * DAY).kind, 'expired', 'a tag from the future (beyond the window) is not valid');
});

test('batv: the day number wraps at 1000 without breaking validity', () => {
  const p = policy();
  const nearWrap = 20_997 * DAY + 3_600_000; // day 997: expiry day 1004 -> DDD 004
  const tagged = signReversePath('alice@example.com', p, nearWrap);
  assert.match(tagged, /^prvs=0004/);
  for (let d = 0; d <= 7; d++) assert.equal(verifyBatvAddress(tagged, p, nearWrap + d * DAY).kind, 'valid', `day +${d}`);
  assert.equal(verifyBatvAddress(tagged, p, nearWrap + 8 * DAY).kind, 'expired');
});

test('batv: bad signature, unknown key, malformed and untagged are told apart; tags survive lowercasing', () => {
  const p = policy();
  const tagged = signReversePath('Alice@example.com', p, NOW);
  const sig = tagged.slice(9, 15);
  const flipped = `${tagged.slice(0, 9)}${sig[0] === '0' ? '1' : '0'}${tagged.slice(10)}`;
  assert.deepEqual(verifyBatvAddress(flipped, p, NOW), { kind: 'bad-signature', address: 'Alice@example.com', keyId: 0 });
  assert.equal(verifyBatvAddress(tagged.replace('Alice', 'Mallory'), p, NOW).kind, 'bad-signature', 'a tag is bound to its address');
  assert.deepEqual(verifyBatvAddress(`prvs=5${tagged.slice(6)}`, p, NOW).kind, 'unknown-key');
  assert.deepEqual(verifyBatvAddress('prvs=abc=alice@example.com', p, NOW), { kind: 'malformed', address: 'alice@example.com' });
  assert.deepEqual(verifyBatvAddress('alice@example.com', p, NOW), { kind: 'untagged', address: 'alice@example.com' });
  assert.deepEqual(verifyBatvAddress('prvs=0123abcdef=@example.com', p, NOW).kind, 'untagged');
  assert.equal(verifyBatvAddress(tagged.toLowerCase(), p, NOW).kind, 'valid');
  assert.equal(verifyBatvAddress(tagged.toUpperCase().replace('PRVS', 'prvs'), p, NOW).kind, 'valid');
});

test('batv: rotation: the first key signs, both verify; a dropped key is unknown', () => {
  const old = signReversePath('alice@example.com', policy([K0]), NOW);
  const rotated = policy([K1, K0]);
  const fresh = signReversePath('alice@example.com', rotated, NOW);
  assert.match(fresh, /^prvs=1/);
  assert.equal(verifyBatvAddress(old, rotated, NOW).kind, 'valid');
  assert.equal(verifyBatvAddress(fresh, rotated, NOW).kind, 'valid');
  assert.equal(verifyBatvAddress(old, policy([K1]), NOW).kind, 'unknown-key');
  // The same key id with another secret: a forged or stale tag.
  assert.equal(verifyBatvAddress(old, policy([{ id: 0, secret: K1.secret }]), NOW).kind, 'bad-signature');
});

test('batv: property: a signed address always verifies and strips back; a changed signature digit never verifies', () => {
  const local = fc.stringMatching(/^[a-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[a-z0-9-]{1,10}){0,2}$/);
  fc.assert(
    fc.property(local, fc.integer({ min: 0, max: 40_000 }), fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 15 }), (lp, day, pos, digit) => {
      if (/^prvs=[^=]*=/i.test(lp)) return;
      const address = `${lp}@example.com`;
      const now = day * DAY + 1000;
      const tagged = signReversePath(address, policy(), now);
      assert.equal(stripBatvTag(tagged), address);
      assert.equal(verifyBatvAddress(tagged, policy(), now).kind, 'valid');
      const i = 9 + pos;
      const d = digit.toString(16);
      if (tagged[i].toLowerCase() === d) return;
      assert.equal(verifyBatvAddress(`${tagged.slice(0, i)}${d}${tagged.slice(i + 1)}`, policy(), now).kind, 'bad-signature');
    }),
    { seed: SEED, numRuns: 2000 },
  );
});

test('batv: key files: trailing newline trimmed, short or missing secrets refused with the key named', () => {
  const files: Record<string, Buffer> = { 'a.key': Buffer.from('0123456789abcdef0123\n'), 'short.key': Buffer.from('tooshort\n') };
  const read = (p: string): Buffer => {
    const b = files[p];
    if (b === undefined) throw new Error('ENOENT: no such file');
    return b;
  };
  assert.deepEqual(loadBatvKeys([{ id: 3, secretFile: 'a.key' }], read), [{ id: 3, secret: Buffer.from('0123456789abcdef0123') }]);
  assert.throws(() => loadBatvKeys([{ id: 1, secretFile: 'short.key' }], read), (e: unknown) => e instanceof BatvKeyError && /key 1: "short.key" holds 8 bytes; a secret needs at least 16/.test(e.message));
  assert.throws(() => loadBatvKeys([{ id: 2, secretFile: 'gone.key' }], read), /key 2: cannot read "gone.key": ENOENT/);
});
