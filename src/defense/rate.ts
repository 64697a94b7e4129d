// A per-key event rate over a sliding window (connection_rate_per_ip, "60/min"): the textual form,
// its parser, and an O(1) estimator. Two fixed windows (the current and the previous one) with the
// previous weighted by how much of it still lies inside the sliding window, as rate limiters in
// front of large services do: memory is two small maps of the keys seen in the last two windows,
// never one timestamp per event. Pure: time enters as `nowMs`. The same arithmetic
// (windowStartMs, slidingEstimate) serves the cluster's shared count (defense/shared-rate.ts).

export type Rate = { readonly count: number; readonly windowSeconds: number };

const UNITS: Record<string, number> = { s: 1, sec: 1, second: 1, m: 60, min: 60, minute: 60, h: 3600, hour: 3600 };

/** "60/min" -> { count: 60, windowSeconds: 60 }; "10/30s" -> 10 per 30 s. A text naming the problem otherwise. */
export function parseRate(text: string): Rate | string {
  const m = /^\s*(\d{1,7})\s*\/\s*(\d{0,5})\s*([a-z]+)\s*$/.exec(text);
  if (m === null) return 'must be "COUNT/UNIT", e.g. "60/min", "5/s", "1000/hour" or "10/30s"';
  const unit = UNITS[m[3]!];
  if (unit === undefined) return `unknown unit "${m[3]}": use s, min or hour`;
  const times = m[2] === '' ? 1 : Number(m[2]);
  const count = Number(m[1]);
  if (count < 1) return 'the count must be at least 1';
  if (times < 1) return 'the window must be at least 1 unit';
  const windowSeconds = times * unit;
  if (windowSeconds > 86_400) return 'the window must be at most a day';
  return { count, windowSeconds };
}

export function rateText(rate: Rate): string {
  if (rate.windowSeconds === 60) return `${rate.count}/min`;
  if (rate.windowSeconds === 3600) return `${rate.count}/hour`;
  if (rate.windowSeconds === 1) return `${rate.count}/s`;
  return `${rate.count}/${rate.windowSeconds}s`;
}

/** The start of the fixed window of `windowMs` that holds `nowMs` (windows are aligned to the epoch,
 *  so every node sharing a count puts the same instant in the same window). */
export function windowStartMs(nowMs: number, windowMs: number): number {
  return nowMs - (nowMs % windowMs);
}

/**
 * The events in the sliding window ending at `nowMs`, from the counts of the current fixed window
 * and of the one before it: the previous one weighted by how much of it the sliding window still
 * covers (all of it at the start of the current window, none at its end).
 */
export function slidingEstimate(current: number, previous: number, nowMs: number, windowMs: number): number {
  const weight = 1 - (nowMs - windowStartMs(nowMs, windowMs)) / windowMs;
  return current + previous * weight;
}

/**
 * Judges one event already counted in `current` (as a shared counter's increment returns it):
 * within the rate, and the measured value (the estimate with this event, as SlidingRate.hit reports it).
 */
export function judgeCounted(rate: Rate, current: number, previous: number, nowMs: number): { isWithin: boolean; value: number } {
  const before = slidingEstimate(current - 1, previous, nowMs, rate.windowSeconds * 1000);
  return { isWithin: before + 1 <= rate.count, value: Math.floor(before) + 1 };
}

/** Counts events per key; `hit` records one and says whether the key stays within the rate. */
export class SlidingRate {
  readonly #rate: Rate;
  readonly #windowMs: number;
  #windowStartMs = 0;
  #current = new Map<string, number>();
  #previous = new Map<string, number>();

  constructor(rate: Rate) {
    this.#rate = rate;
    this.#windowMs = rate.windowSeconds * 1000;
  }

  #advance(nowMs: number): void {
    const start = windowStartMs(nowMs, this.#windowMs);
    if (start === this.#windowStartMs) return;
    // One window on: the current becomes the previous; more than one: both are past.
    this.#previous = start - this.#windowStartMs === this.#windowMs ? this.#current : new Map();
    this.#current = new Map();
    this.#windowStartMs = start;
  }

  /** The estimated events of `key` in the sliding window ending now, this one not counted. */
  estimate(key: string, nowMs: number): number {
    this.#advance(nowMs);
    return slidingEstimate(this.#current.get(key) ?? 0, this.#previous.get(key) ?? 0, nowMs, this.#windowMs);
  }

  /** Records an event if it stays within the rate; returns the estimate it was judged by and whether it fit. */
  hit(key: string, nowMs: number): { isWithin: boolean; estimate: number } {
    const estimate = this.estimate(key, nowMs);
    // Security: a refused attempt counts too, so a client hammering past the limit stays out.
    this.#current.set(key, (this.#current.get(key) ?? 0) + 1);
    return { isWithin: estimate + 1 <= this.#rate.count, estimate: Math.floor(estimate) + 1 };
  }

  /** Keys held (both windows), for tests and bounds. */
  get size(): number {
    return this.#current.size + this.#previous.size;
  }
}
