// Gives the memory of dead socket read buffers back while large messages arrive. Node allocates
// a new buffer for every socket read (up to 64 KiB); the machine keeps views of it until the body
// file has written them, and then nothing refers to it. V8 frees that memory only when it collects
// the small JS object that owns it, and a large upload allocates little JS per read, so the young
// generation hardly fills: what starts a collection is V8's external-memory limit, 64 MiB past
// the last one, and by then many of those objects have outlived a young collection and wait for
// a full one. Measured (bench:memory, 100 concurrent 20 MB uploads per worker): 60-130 MiB of
// dead read buffers per worker at the peak, against 10-20 MiB live.
// Owns only the decision when to collect; never changes what is read, kept or written. Without
// a collector (a process started without --expose-gc, e.g. a single process) it does nothing.

import { performance } from 'node:perf_hooks';

/** How often the ArrayBuffer memory is looked at (a /proc read inside memoryUsage(), ~15 µs): every this many octets read. */
export const CHECK_EVERY_BYTES = 4 * 1024 * 1024;
/** Growth of ArrayBuffer memory since the last collection that starts one. */
export const SLACK_BYTES = 16 * 1024 * 1024;
/** Forced collections take at most 1/this of the time (one takes 10-40 ms on a loaded 2-core machine). */
export const TIME_SHARE_DIVISOR = 10;

export type ReclaimOptions = {
  /** A full collection; absent: nothing is ever collected. */
  collect?: (() => void) | null;
  /** Octets held by ArrayBuffer backing stores (Buffers among them). */
  arrayBufferBytes?: () => number;
  nowMs?: () => number;
};

export class ReadReclaimer {
  readonly #collect: (() => void) | null;
  readonly #arrayBufferBytes: () => number;
  readonly #nowMs: () => number;
  #sinceCheck = 0;
  /** ArrayBuffer memory just after the last collection, or the lowest seen since. */
  #floor: number;
  #notBeforeMs = 0;
  /** Collections this object started (for tests and curiosity). */
  collections = 0;

  constructor(opts: ReclaimOptions = {}) {
    this.#collect = opts.collect === undefined ? exposedGc() : opts.collect;
    // Not v8.getHeapStatistics().external_memory: V8 lowers that only at the collection after the
    // one that freed the buffers (they are swept concurrently), so it would keep asking for more.
    this.#arrayBufferBytes = opts.arrayBufferBytes ?? (() => process.memoryUsage().arrayBuffers);
    this.#nowMs = opts.nowMs ?? (() => performance.now());
    this.#floor = this.#collect === null ? 0 : this.#arrayBufferBytes();
  }

  /** Called with the size of every chunk read from a client. */
  noteRead(bytes: number): void {
    if (this.#collect === null) return;
    this.#sinceCheck += bytes;
    if (this.#sinceCheck < CHECK_EVERY_BYTES) return;
    this.#sinceCheck = 0;
    const held = this.#arrayBufferBytes();
    // V8 collected on its own (or the load went): nothing to do.
    if (held < this.#floor) {
      this.#floor = held;
      return;
    }
    if (held - this.#floor < SLACK_BYTES) return;
    const startedMs = this.#nowMs();
    if (startedMs < this.#notBeforeMs) return;
    this.#collect();
    this.collections++;
    const endedMs = this.#nowMs();
    this.#notBeforeMs = endedMs + (endedMs - startedMs) * (TIME_SHARE_DIVISOR - 1);
    // What is still held now is live.
    this.#floor = this.#arrayBufferBytes();
  }
}

/** V8's collector, when the process was started with --expose-gc (the supervisor's workers are). */
function exposedGc(): (() => void) | null {
  const gc = (globalThis as { gc?: unknown }).gc;
  return typeof gc === 'function' ? () => (gc as () => void)() : null;
}
