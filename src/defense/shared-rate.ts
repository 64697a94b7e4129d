// The per-address connection rate counted by the whole cluster (limits.connection_rate_shared):
// every node behind the load balancer counts the connections it admits in the state store (Redis),
// one counter per address and fixed window (key v1:rate:conn:<address>:<window start, seconds>),
// and judges the sliding-window estimate from the current and the previous window's counters
// (defense/rate.ts holds the arithmetic). Owns the key format and the one store round trip.
// Must never refuse anyone because the store is away: a failure or a late answer is "unavailable",
// and admission (server/admission.ts) admits on the node's own count; the store is then left
// alone for a few seconds, so a hung Redis does not delay every client.

import type { StateStore } from '../store/store.ts';
import { judgeCounted, windowStartMs, type Rate } from './rate.ts';

/**
 * How long admission waits for the store's answer before admitting on the node's own count. The
 * client is waiting for its greeting meanwhile (its bytes wait in the socket, unread); a Redis on
 * the local network answers in about a millisecond, so 500 ms means it is down or drowning, and
 * stalling every new connection longer would turn a dead Redis into an outage.
 */
export const SHARED_RATE_TIMEOUT_MS = 500;

/**
 * After a failure or a late answer the store is not asked again for this long: connections are
 * admitted on the node's own count at once. A Redis that hangs (not one that refuses connections,
 * which fails fast) would otherwise hold every new client for the whole timeout.
 */
export const SHARED_RATE_PAUSE_MS = 5_000;

/** At most one "the shared count did not answer" warning per this long (the rest are counted in it). */
export const SHARED_RATE_WARN_INTERVAL_MS = 60_000;

export type SharedRateAnswer =
  | { kind: 'within' }
  | { kind: 'over'; value: number }
  | { kind: 'unavailable'; reason: string };

export interface SharedRate {
  /** Counts one connection from `address` at `nowMs` and judges it against the cluster's rate. Never rejects. */
  count(address: string, nowMs: number): Promise<SharedRateAnswer>;
}

/** The counter of `address` for the fixed window starting at `startMs` (versioned, like every store key). */
export function sharedRateKey(address: string, startMs: number): string {
  return `v1:rate:conn:${address}:${Math.floor(startMs / 1000)}`;
}

export function sharedRate(store: StateStore, rate: Rate, opts: { timeoutMs?: number; pauseMs?: number } = {}): SharedRate {
  const windowMs = rate.windowSeconds * 1000;
  // A counter is read as "the previous window" for one window after its own: two windows of life.
  const ttlSeconds = 2 * rate.windowSeconds;
  const timeoutMs = opts.timeoutMs ?? SHARED_RATE_TIMEOUT_MS;
  const pauseMs = opts.pauseMs ?? SHARED_RATE_PAUSE_MS;
  let failedAtMs = -Infinity;
  const unavailable = (nowMs: number, reason: string): SharedRateAnswer => {
    failedAtMs = nowMs;
    return { kind: 'unavailable', reason };
  };
  return {
    async count(address, nowMs) {
      if (nowMs - failedAtMs < pauseMs) return { kind: 'unavailable', reason: `not asked for ${pauseMs} ms after a failure` };
      const start = windowStartMs(nowMs, windowMs);
      // One round trip: both commands go out together (one connection, written in the same turn).
      const counts = Promise.all([store.increment(sharedRateKey(address, start), ttlSeconds), store.get(sharedRateKey(address, start - windowMs))]);
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => {
        timer = setTimeout(() => resolve('late'), timeoutMs);
      });
      try {
        const answer = await Promise.race([counts, late]);
        if (answer === 'late') {
          // The commands may still complete; their result is dropped (the count stays, as it should).
          counts.catch(() => undefined);
          return unavailable(nowMs, `no answer within ${timeoutMs} ms`);
        }
        const [current, previousText] = answer;
        const previous = previousText === null ? 0 : Number(previousText);
        const judged = judgeCounted(rate, current, Number.isFinite(previous) ? previous : 0, nowMs);
        return judged.isWithin ? { kind: 'within' } : { kind: 'over', value: judged.value };
      } catch (err) {
        return unavailable(nowMs, err instanceof Error ? err.message : String(err));
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** Paces a warning that could repeat for every connection: the first at once, then at most one per interval, with how many were held back. Pure. */
export class WarnPacer {
  readonly #intervalMs: number;
  #lastMs = -Infinity;
  #held = 0;

  constructor(intervalMs: number) {
    this.#intervalMs = intervalMs;
  }

  /** Whether to log now, and how many warnings were held back since the last one logged. */
  next(nowMs: number): { isDue: true; held: number } | { isDue: false } {
    if (nowMs - this.#lastMs < this.#intervalMs) {
      this.#held++;
      return { isDue: false };
    }
    const held = this.#held;
    this.#lastMs = nowMs;
    this.#held = 0;
    return { isDue: true, held };
  }
}
