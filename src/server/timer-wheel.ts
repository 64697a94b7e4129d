// One coarse timer wheel per process: every per-connection wait (idle and command deadlines, the
// data rate window, the session cap, tarpit delays, the TLS handshake and PROXY header bounds,
// the close grace) is an entry here instead of a Node Timeout of its own, so 10,000 idle
// connections cost one interval timer and 10,000 small entries, not 10,000 timer handles.
// Entries fire at most one slot late (never early); rescheduling later is a field write (the
// entry is moved lazily when its old slot comes up), so re-arming a deadline on every read is
// cheap. Never runs a callback synchronously from schedule/cancel. Owns no socket and no policy.

/** A scheduled wait. Held by its owner; `cancel` or `schedule` again to change it. */
export class WheelEntry {
  /** When it is due (ms since the epoch, the wheel's clock); Infinity when not scheduled. */
  dueMs = Infinity;
  /** The slot it sits in, or -1. */
  slot = -1;
  prev: WheelEntry | null = null;
  next: WheelEntry | null = null;
  readonly fire: (nowMs: number, owner: unknown) => void;
  /** Passed to `fire`: lets every owner of a kind share one function instead of a closure each. */
  readonly owner: unknown;

  constructor(fire: (nowMs: number, owner: unknown) => void, owner: unknown = null) {
    this.fire = fire;
    this.owner = owner;
  }

  get isScheduled(): boolean {
    return this.dueMs !== Infinity;
  }
}

export type WheelClock = {
  now(): number;
  /** Calls `tick` every `ms` until the returned stop function is called; must not keep the process alive. */
  every(ms: number, tick: () => void): () => void;
};

const REAL_CLOCK: WheelClock = {
  now: () => Date.now(),
  every(ms, tick) {
    const t = setInterval(tick, ms);
    t.unref();
    return () => clearInterval(t);
  },
};

export class TimerWheel {
  readonly #resolutionMs: number;
  readonly #heads: (WheelEntry | null)[];
  readonly #clock: WheelClock;
  #size = 0;
  /** The slot index the last tick reached, as an absolute count of resolutions since the epoch. */
  #cursor: number;
  #stop: (() => void) | null = null;
  readonly #onError: (err: unknown) => void;

  constructor(opts: { resolutionMs?: number; slots?: number; clock?: WheelClock; onError?: (err: unknown) => void } = {}) {
    this.#onError = opts.onError ?? ((err) => console.error('timer wheel: a callback threw', err));
    this.#resolutionMs = opts.resolutionMs ?? 250;
    this.#heads = new Array<WheelEntry | null>(opts.slots ?? 512).fill(null);
    this.#clock = opts.clock ?? REAL_CLOCK;
    this.#cursor = Math.floor(this.#clock.now() / this.#resolutionMs);
  }

  /** Entries waiting. */
  get size(): number {
    return this.#size;
  }

  now(): number {
    return this.#clock.now();
  }

  /** Makes `entry` due at `dueMs` (replacing any earlier schedule). */
  schedule(entry: WheelEntry, dueMs: number): void {
    if (!(dueMs < Infinity)) return this.cancel(entry);
    if (entry.slot !== -1) {
      // Later than where it sits: it is moved when that slot comes up (lazy), with no list work now.
      if (dueMs >= entry.dueMs) {
        entry.dueMs = dueMs;
        return;
      }
      this.#unlink(entry);
    }
    entry.dueMs = dueMs;
    this.#link(entry);
  }

  cancel(entry: WheelEntry): void {
    if (entry.slot !== -1) this.#unlink(entry);
    entry.dueMs = Infinity;
  }

  /** Advances to `nowMs` and fires what is due; the clock's interval calls it (tests may too). */
  advance(nowMs: number = this.#clock.now()): void {
    const target = Math.floor(nowMs / this.#resolutionMs);
    const n = this.#heads.length;
    // A long pause (a blocked loop, a suspended machine) visits each slot once, not each missed tick.
    const start = this.#cursor;
    const steps = Math.min(target - start, n);
    const due: WheelEntry[] = [];
    for (let i = 1; i <= steps; i++) {
      const slot = (start + i) % n;
      let e = this.#heads[slot];
      while (e !== null) {
        const next = e.next;
        if (e.dueMs <= nowMs) {
          this.#unlink(e);
          due.push(e);
        } else if (this.#slotOf(e.dueMs) !== slot) {
          // Rescheduled later, or more than one turn ahead: moved to its slot now.
          this.#unlink(e);
          this.#link(e);
        }
        e = next;
      }
    }
    if (target > this.#cursor) this.#cursor = target;
    // Due ones fire in order of their due time; a callback may schedule or cancel anything.
    due.sort((a, b) => a.dueMs - b.dueMs);
    for (const e of due) {
      if (e.slot !== -1) continue; // rescheduled by an earlier callback
      e.dueMs = Infinity;
      try {
        e.fire(nowMs, e.owner);
      } catch (err) {
        // One owner's bug must not stop every other deadline. (Connections catch their own.)
        this.#onError(err);
      }
    }
  }

  #slotOf(dueMs: number): number {
    // Never the slot being visited now or a past one: a due time inside the current slot is
    // seen on the next tick (at most one resolution late, never early).
    const abs = Math.max(Math.ceil(dueMs / this.#resolutionMs), this.#cursor + 1);
    return abs % this.#heads.length;
  }

  #link(e: WheelEntry): void {
    // The wheel was idle (no interval running): its cursor starts again from now.
    if (this.#size === 0) this.#cursor = Math.max(this.#cursor, Math.floor(this.#clock.now() / this.#resolutionMs));
    const slot = this.#slotOf(e.dueMs);
    const head = this.#heads[slot]!;
    e.slot = slot;
    e.prev = null;
    e.next = head;
    if (head !== null) head.prev = e;
    this.#heads[slot] = e;
    if (this.#size++ === 0) this.#stop = this.#clock.every(this.#resolutionMs, () => this.advance());
  }

  #unlink(e: WheelEntry): void {
    if (e.prev === null) this.#heads[e.slot] = e.next;
    else e.prev.next = e.next;
    if (e.next !== null) e.next.prev = e.prev;
    e.prev = null;
    e.next = null;
    e.slot = -1;
    if (--this.#size === 0) {
      this.#stop?.();
      this.#stop = null;
    }
  }
}

/** The process's wheel (one per worker). */
let shared: TimerWheel | null = null;
export function processWheel(): TimerWheel {
  shared ??= new TimerWheel();
  return shared;
}
