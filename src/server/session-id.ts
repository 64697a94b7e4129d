// Session ids: unique across worker processes and restarts without any coordination.
// A queue id is the session id plus the transaction's number in base 36, so it is unique too.
// Never use these as secrets: they are for logs and file names.

import { randomFillSync } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'; // Crockford base 32: no I, L, O, U

/** Random octets taken 5 at a time, refilled when used up: one call into the CSPRNG per 1,024
 *  sessions instead of one per session (a CPU profile of the one-message-per-connection bench
 *  had 2.7 % of a worker's time in randomBytes(5)). Never handed out twice. */
const POOL = Buffer.alloc(5 * 1024);
let poolAt = POOL.length;

/** A spool writer's id (it names the writer's segments): the cluster worker's id and pid, or
 *  the pid of the single process; the queue manager derives it for a worker it sees exit. */
export function writerIdFor(workerId: number | null, pid: number): string {
  return workerId === null ? `p${pid}` : `w${workerId}p${pid}`;
}

/** The id's octets, written in place and read back as one string. */
const ID_BYTES = Buffer.alloc(17);
const ALPHABET_CODES = Buffer.from(ALPHABET, 'latin1');

/** 9 chars of time (ms, base 32: sortable) + 8 chars of randomness (40 bits). One flat string:
 *  built by concatenation it was a rope of three strings, about 60 octets more per session for
 *  as long as the connection lives (issue 11's per-idle-connection budget). */
export function newSessionId(nowMs: number = Date.now()): string {
  let t = nowMs;
  for (let i = 8; i >= 0; i--) {
    ID_BYTES[i] = ALPHABET_CODES[t % 32];
    t = Math.floor(t / 32);
  }
  if (poolAt === POOL.length) {
    randomFillSync(POOL);
    poolAt = 0;
  }
  // 40 bits: exact in a double.
  let bits = POOL.readUIntBE(poolAt, 5);
  poolAt += 5;
  for (let i = 16; i >= 9; i--) {
    ID_BYTES[i] = ALPHABET_CODES[bits % 32];
    bits = Math.floor(bits / 32);
  }
  return ID_BYTES.toString('latin1');
}
