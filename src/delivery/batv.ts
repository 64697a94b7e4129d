// BATV "prvs" tags (draft-levine-smtp-batv-01, 4.1): signing the reverse-path of mail we send,
// verifying the address a bounce comes back to, and stripping the tag for local delivery. Pure
// (time comes in as `nowMs`, secrets as bytes) except loadBatvKeys, the one function that reads
// the key files, at start. Never logs or returns a secret, and never compares a signature with
// anything but timingSafeEqual.
//
// Tag format: prvs=KDDDSSSSSS=local@domain
//   K       key number, 0-9 (`batv.keys[].id`): which secret signed, so two can be valid while rotating
//   DDD     the day the tag expires, as days since 1970-01-01 UTC, modulo 1000
//   SSSSSS  the first 3 octets of HMAC-SHA-256(secret, "KDDD" + lowercased "local@domain"), in hex
//
// Why HMAC-SHA-256 and not the draft's HMAC-SHA-1: only the signer ever verifies a tag (the draft
// says so: the format is private to the domain), so there is nothing to interoperate with, and
// SHA-256 costs nothing here. The truncation to 24 bits is the draft's (the tag has room for six
// hex digits): a forger has one chance in 16.7 million per guess, and each guess is one RCPT that
// we refuse and the session counts. The address is lowercased before hashing because bounce
// generators are known to change the case of the address they return to (RFC 5321 2.4 lets them
// only for the domain, but some lowercase everything); the tag's hex digits compare
// case-insensitively for the same reason.
//
// Hand-written: it is thirty lines over node:crypto, and the npm BATV packages are unmaintained.

import { createHmac, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';

const DAY_MS = 86_400_000;
/** DDD wraps at 1000 days; a validity window must stay well inside half of it to be unambiguous. */
export const BATV_MAX_AGE_DAYS_LIMIT = 365;
/** RFC 5321 4.5.3.1.1: a local part is at most 64 octets; the tag adds "prvs=" + 10 + "=". */
const MAX_LOCAL_PART_OCTETS = 64;
const TAG_OVERHEAD_OCTETS = 'prvs=KDDDSSSSSS='.length;
/** Shorter secrets are refused at start (a 24-bit tag is only as good as a secret that cannot be guessed). */
export const BATV_MIN_SECRET_BYTES = 16;

export type BatvKey = { readonly id: number; readonly secret: Buffer };

export type BatvPolicy = {
  /** Lowercased domains whose addresses are signed and whose bounces are verified. */
  readonly domains: ReadonlySet<string>;
  /** The first key signs; every key verifies (rotation: add the new key first, drop the old one after maxAgeDays). */
  readonly keys: readonly BatvKey[];
  /** Days a tag stays valid after it is made (the draft suggests about a week). */
  readonly maxAgeDays: number;
  /** Lowercased full addresses that are never signed and whose bounces are never checked. */
  readonly exceptions: ReadonlySet<string>;
};

/** What verifying a recipient found. `address` is the untagged address wherever there was a tag. */
export type BatvResult =
  | { readonly kind: 'valid'; readonly address: string; readonly keyId: number }
  | { readonly kind: 'expired'; readonly address: string; readonly keyId: number }
  | { readonly kind: 'bad-signature'; readonly address: string; readonly keyId: number }
  | { readonly kind: 'unknown-key'; readonly address: string; readonly keyId: number }
  /** prvs= but not KDDDSSSSSS: a hand-made or damaged tag. */
  | { readonly kind: 'malformed'; readonly address: string }
  | { readonly kind: 'untagged'; readonly address: string };

// draft-levine-smtp-batv-01 4.1: tag-type "prvs", tag-val K DDD SSSSSS. Case-insensitive, as
// tag-type is and as lowercasing bounce generators need.
const TAGGED = /^prvs=([^=]*)=(.+)$/i;
const TAG_VALUE = /^([0-9])([0-9]{3})([0-9a-f]{6})$/i;
/** RFC 5321 4.1.2 Dot-string (with RFC 6531 UTF-8): the only local parts we tag (a quoted one cannot take a prefix). */
const DOT_STRING = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\u{10ffff}-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\u{10ffff}-]+)*$/u;

function splitAddress(address: string): { localPart: string; domain: string } | null {
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return null;
  return { localPart: address.slice(0, at), domain: address.slice(at + 1) };
}

function dayNumber(nowMs: number): number {
  return Math.floor(nowMs / DAY_MS);
}

function signature(secret: Buffer, keyId: number, ddd: string, address: string): Buffer {
  return createHmac('sha256', secret).update(`${keyId}${ddd}${address.toLowerCase()}`, 'utf8').digest().subarray(0, 3);
}

/** Whether `address` (local@domain) is in a BATV domain and not an exception. */
export function isBatvAddress(address: string, policy: BatvPolicy): boolean {
  const parts = splitAddress(address);
  if (parts === null || !policy.domains.has(parts.domain.toLowerCase())) return false;
  return !policy.exceptions.has(stripBatvTag(address).toLowerCase());
}

/**
 * The reverse-path to send: `address` tagged when it is ours to sign (a BATV domain, not an
 * exception, a dot-string local part with room for the tag, not tagged already), else unchanged.
 * The null reverse-path ('') stays null.
 */
export function signReversePath(address: string, policy: BatvPolicy, nowMs: number): string {
  if (address === '' || policy.keys.length === 0 || !isBatvAddress(address, policy)) return address;
  const parts = splitAddress(address)!;
  if (TAGGED.test(parts.localPart) || !DOT_STRING.test(parts.localPart)) return address;
  if (Buffer.byteLength(parts.localPart, 'utf8') + TAG_OVERHEAD_OCTETS > MAX_LOCAL_PART_OCTETS) return address;
  const key = policy.keys[0];
  const ddd = String((dayNumber(nowMs) + policy.maxAgeDays) % 1000).padStart(3, '0');
  const sig = signature(key.secret, key.id, ddd, address).toString('hex');
  return `prvs=${key.id}${ddd}${sig}=${address}`;
}

/** The address without its prvs tag (any tag, valid or not); unchanged when it has none. */
export function stripBatvTag(address: string): string {
  const m = TAGGED.exec(address);
  return m === null || splitAddress(m[2]) === null ? address : m[2];
}

/**
 * Verifies the address a message was sent to. A tag is valid from the day it was made until the
 * end of its expiry day (UTC), so a tag made with maxAgeDays = 7 lives 7 to 8 days.
 */
export function verifyBatvAddress(address: string, policy: BatvPolicy, nowMs: number): BatvResult {
  const m = TAGGED.exec(address);
  if (m === null || splitAddress(m[2]) === null) return { kind: 'untagged', address };
  const original = m[2];
  const value = TAG_VALUE.exec(m[1]);
  if (value === null) return { kind: 'malformed', address: original };
  const keyId = Number(value[1]);
  const ddd = value[2];
  const key = policy.keys.find((k) => k.id === keyId);
  if (key === undefined) return { kind: 'unknown-key', address: original, keyId };
  // Security: the whole signature is compared in constant time, whatever the prefix that matched.
  const given = Buffer.from(value[3], 'hex');
  if (!timingSafeEqual(given, signature(key.secret, keyId, ddd, original))) return { kind: 'bad-signature', address: original, keyId };
  // Days from today to the expiry day, modulo 1000: 0..maxAge is live; anything else has passed
  // (a day further ahead than maxAge was never issued by us with this window).
  const daysLeft = (Number(ddd) - (dayNumber(nowMs) % 1000) + 1000) % 1000;
  if (daysLeft > policy.maxAgeDays) return { kind: 'expired', address: original, keyId };
  return { kind: 'valid', address: original, keyId };
}

export class BatvKeyError extends Error {
  readonly code = 'PORTCULLIS_BATV_KEY';
}

/**
 * Reads each key's secret file (at start; the server refuses to start on a bad one): the file's
 * bytes with trailing whitespace (a final newline) removed, at least BATV_MIN_SECRET_BYTES long.
 * Generate one with `head -c 32 /dev/urandom | base64 > batv.key`.
 */
export function loadBatvKeys(keys: readonly { id: number; secretFile: string }[], read: (path: string) => Buffer = readFileSync): BatvKey[] {
  return keys.map(({ id, secretFile }) => {
    let bytes: Buffer;
    try {
      bytes = read(secretFile);
    } catch (err) {
      throw new BatvKeyError(`batv.keys: key ${id}: cannot read "${secretFile}": ${(err as Error).message}`);
    }
    let end = bytes.length;
    while (end > 0 && (bytes[end - 1] === 0x0a || bytes[end - 1] === 0x0d || bytes[end - 1] === 0x20 || bytes[end - 1] === 0x09)) end--;
    const secret = Buffer.from(bytes.subarray(0, end));
    if (secret.length < BATV_MIN_SECRET_BYTES) {
      throw new BatvKeyError(`batv.keys: key ${id}: "${secretFile}" holds ${secret.length} bytes; a secret needs at least ${BATV_MIN_SECRET_BYTES}`);
    }
    return { id, secret };
  });
}

/** The policy from the [batv] section and the loaded keys. */
export function batvPolicy(cfg: { domains: readonly string[]; maxAgeSeconds: number; exceptions: readonly string[] }, keys: readonly BatvKey[]): BatvPolicy {
  return {
    domains: new Set(cfg.domains.map((d) => d.toLowerCase())),
    keys,
    maxAgeDays: Math.max(1, Math.round(cfg.maxAgeSeconds / 86_400)),
    exceptions: new Set(cfg.exceptions.map((a) => a.toLowerCase())),
  };
}
