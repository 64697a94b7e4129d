// Session ids: unique across worker processes and restarts without any coordination.
// A queue id is the session id plus the transaction's number in base 36, so it is unique too.
// Never use these as secrets: they are for logs and file names.

import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'; // Crockford base 32: no I, L, O, U

/** 9 chars of time (ms, base 32: sortable) + 8 chars of randomness (40 bits). */
export function newSessionId(nowMs: number = Date.now()): string {
  let t = nowMs;
  let time = '';
  for (let i = 0; i < 9; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const r = randomBytes(5);
  let bits = 0n;
  for (const b of r) bits = (bits << 8n) | BigInt(b);
  let rand = '';
  for (let i = 0; i < 8; i++) {
    rand = ALPHABET[Number(bits & 31n)] + rand;
    bits >>= 5n;
  }
  return time + rand;
}
