// The process-wide budget for message content held in memory: one per server (per worker), shared
// by every session's body handle. A handle reserves what it holds before its body goes to the
// spool; when a reservation does not fit, that body goes to its file early, and gives back its
// reservation. Never allocates, never does I/O, never reads a clock: two integers and a check.
// (No RFC: resource bounds, RFC 5321 4.5.3.1 only sets minimums for what a server accepts.)
//
// Why: smtp.body_memory_bytes bounds one session, not the sum. 200 sessions that do not declare
// SIZE hold 200 x 1 MiB before any of them spills (docs/benchmarks.md, "Memory with large
// messages"); with the budget, what all of them hold together stays under its limit.

/** The budget's default, per worker: 32 small-body sessions at the 1 MiB threshold at once. */
export const DEFAULT_BODY_MEMORY_BUDGET_BYTES = 32 * 1024 * 1024;

export class BodyBudget {
  readonly limitBytes: number;
  #usedBytes = 0;

  constructor(limitBytes: number) {
    if (!Number.isSafeInteger(limitBytes) || limitBytes < 0) throw new RangeError(`body budget: bad limit ${limitBytes}`);
    this.limitBytes = limitBytes;
  }

  /** Octets reserved now, by every handle together: at most `limitBytes`, never negative. */
  get usedBytes(): number {
    return this.#usedBytes;
  }

  /** Takes `bytes` if they fit; if not, takes nothing and answers false (the caller spills). */
  reserve(bytes: number): boolean {
    if (bytes < 0) throw new RangeError(`body budget: reserve of ${bytes} octets`);
    const used = this.#usedBytes + bytes;
    if (used > this.limitBytes) return false;
    this.#usedBytes = used;
    return true;
  }

  /** Gives back `bytes` that reserve() took. Giving back more than is reserved is our bug: it
   *  would let the budget be overdrawn later, so it throws instead of going negative. */
  release(bytes: number): void {
    if (bytes < 0 || bytes > this.#usedBytes) throw new Error(`body budget: release of ${bytes} octets with ${this.#usedBytes} reserved`);
    this.#usedBytes -= bytes;
  }
}
