// Owns the queue's timing decisions: when a deferred recipient is tried again, when it expires,
// when a delay notice is due, which notices NOTIFY allows, and the per-destination state
// (concurrency, dead-destination backoff). Pure: time enters as `nowMs` from an injected clock;
// no timers, no I/O. RFC 5321 4.5.4.1 (retry strategy), RFC 3461 4.1 (NOTIFY); the numbers and
// the dead-destination idea follow Postfix (minimal_backoff_time, maximal_backoff_time,
// maximal_queue_lifetime, delay_warning_time, default_destination_concurrency_limit).

import type { DsnNotify } from '../spool/types.ts';

export type QueueLimits = {
  /** The first retry after the first failure (Postfix minimal_backoff_time, 300 s). */
  minBackoffMs: number;
  /** The longest wait between two tries (Postfix maximal_backoff_time, 4000 s). */
  maxBackoffMs: number;
  /** After this long in the queue a deferred recipient fails (maximal_queue_lifetime, 5 d). */
  maxLifetimeMs: number;
  /** A delay notice once after this long, when NOTIFY allows (delay_warning_time; 0 = never). */
  delayWarningMs: number;
  /** Deliveries at the same time to one destination (default_destination_concurrency_limit). */
  destinationConcurrency: number;
  /** Deliveries at the same time overall. */
  totalConcurrency: number;
  /** Consecutive attempts in which a destination deferred everything before it is dead. */
  deadAfterFailures: number;
};

export const DEFAULT_QUEUE_LIMITS: QueueLimits = {
  minBackoffMs: 300_000,
  maxBackoffMs: 4_000_000,
  maxLifetimeMs: 5 * 24 * 3_600_000,
  delayWarningMs: 4 * 3_600_000,
  destinationConcurrency: 20,
  totalConcurrency: 200,
  deadAfterFailures: 3,
};

/** An injected clock: tests drive time by hand and never sleep. */
export type QueueClock = {
  nowMs(): number;
  /** Calls `fn` once after `delayMs`; the timer never keeps the process alive by itself. */
  setTimer(fn: () => void, delayMs: number): { cancel(): void };
};

export const systemClock: QueueClock = {
  nowMs: () => Date.now(),
  setTimer(fn, delayMs) {
    const t = setTimeout(fn, Math.max(0, Math.min(delayMs, 2 ** 31 - 1)));
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

/**
 * When a recipient deferred at `nowMs` is tried again. As Postfix's queue manager: the wait is
 * the message's age, clamped to [minBackoff, maxBackoff]; since the age roughly doubles with
 * every wait, so does the wait (5, 5, 10, 20, 40 min, then 66 min), with no attempt counter to
 * store. Never past the expiry, so the last try happens when the lifetime ends.
 */
export function nextAttemptMs(arrivalMs: number, nowMs: number, limits: QueueLimits): number {
  const age = Math.max(0, nowMs - arrivalMs);
  const wait = Math.min(Math.max(age, limits.minBackoffMs), limits.maxBackoffMs);
  return Math.min(nowMs + wait, Math.max(nowMs, expiresAtMs(arrivalMs, limits)));
}

export function expiresAtMs(arrivalMs: number, limits: QueueLimits): number {
  return arrivalMs + limits.maxLifetimeMs;
}

export function isExpired(arrivalMs: number, nowMs: number, limits: QueueLimits): boolean {
  return nowMs >= expiresAtMs(arrivalMs, limits);
}

export function isDelayNoticeDue(arrivalMs: number, nowMs: number, limits: QueueLimits): boolean {
  return limits.delayWarningMs > 0 && nowMs - arrivalMs >= limits.delayWarningMs;
}

export type NoticeKind = 'failure' | 'delay' | 'success' | 'relayed';

/** RFC 3461 4.1: NEVER sends nothing; a list sends what it names (`relayed` is the SUCCESS
 *  notice of a next hop without DSN, 5.2.2.3). Without NOTIFY the MTA chooses: failure and
 *  delay notices, never success. A null reverse-path never gets one (RFC 5321 4.5.5): the
 *  caller checks that. */
export function notifyAllows(notify: DsnNotify | undefined, kind: NoticeKind): boolean {
  if (notify === undefined) return kind === 'failure' || kind === 'delay';
  if (notify === 'NEVER') return false;
  switch (kind) {
    case 'failure':
      return notify.includes('FAILURE');
    case 'delay':
      return notify.includes('DELAY');
    case 'success':
    case 'relayed':
      return notify.includes('SUCCESS');
  }
}

type DestinationState = {
  active: number;
  /** Consecutive attempts in which every recipient was deferred. */
  failures: number;
  /** How many times in a row it was declared dead (its backoff doubles). */
  deadRounds: number;
  /** Dead until then: no attempts; after it, one probe at a time until one succeeds. */
  deadUntilMs: number;
};

/**
 * Per-destination bookkeeping: at most `destinationConcurrency` deliveries at once, and a
 * destination whose attempts keep deferring everything is declared dead and left alone for a
 * backoff (doubling from minBackoff to maxBackoff) instead of each queued message trying it in
 * turn; then one probe attempt at a time until one gets through (Postfix's dead destination and
 * its concurrency of one after a failure cohort).
 */
export class DestinationTable {
  readonly #limits: QueueLimits;
  readonly #states = new Map<string, DestinationState>();

  constructor(limits: QueueLimits) {
    this.#limits = limits;
  }

  #state(destination: string): DestinationState {
    let s = this.#states.get(destination);
    if (s === undefined) {
      s = { active: 0, failures: 0, deadRounds: 0, deadUntilMs: 0 };
      this.#states.set(destination, s);
    }
    return s;
  }

  isDead(destination: string, nowMs: number): boolean {
    const s = this.#states.get(destination);
    return s !== undefined && nowMs < s.deadUntilMs;
  }

  deadUntilMs(destination: string): number {
    return this.#states.get(destination)?.deadUntilMs ?? 0;
  }

  /** Whether one more delivery may start now (the caller checks isDead first). */
  hasRoom(destination: string): boolean {
    const s = this.#states.get(destination);
    if (s === undefined) return true;
    // After a death, one probe at a time until something gets through.
    const limit = s.deadRounds > 0 ? 1 : this.#limits.destinationConcurrency;
    return s.active < limit;
  }

  started(destination: string): void {
    this.#state(destination).active++;
  }

  /** `isFailure`: the attempt deferred every recipient (the destination did not take mail). */
  finished(destination: string, isFailure: boolean, nowMs: number): void {
    const s = this.#state(destination);
    s.active = Math.max(0, s.active - 1);
    if (!isFailure) {
      s.failures = 0;
      s.deadRounds = 0;
      s.deadUntilMs = 0;
    } else if (nowMs >= s.deadUntilMs) {
      s.failures++;
      if (s.failures >= this.#limits.deadAfterFailures || s.deadRounds > 0) {
        const wait = Math.min(this.#limits.minBackoffMs * 2 ** s.deadRounds, this.#limits.maxBackoffMs);
        s.deadRounds++;
        s.failures = 0;
        s.deadUntilMs = nowMs + wait;
      }
    }
    if (s.active === 0 && s.failures === 0 && s.deadRounds === 0) this.#states.delete(destination);
  }

  /** The operator's flush: forget the backoff. */
  revive(destination?: string): void {
    for (const [name, s] of this.#states) {
      if (destination !== undefined && name !== destination) continue;
      s.failures = 0;
      s.deadRounds = 0;
      s.deadUntilMs = 0;
    }
  }
}

/** A binary min-heap of (time, key); stale entries are skipped by the caller (lazy deletion). */
export class TimeHeap {
  #times: number[] = [];
  #keys: string[] = [];

  get size(): number {
    return this.#times.length;
  }

  push(timeMs: number, key: string): void {
    const t = this.#times;
    const k = this.#keys;
    let i = t.length;
    t.push(timeMs);
    k.push(key);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (t[parent] <= timeMs) break;
      t[i] = t[parent];
      k[i] = k[parent];
      i = parent;
    }
    t[i] = timeMs;
    k[i] = key;
  }

  peekTime(): number | undefined {
    return this.#times[0];
  }

  pop(): { timeMs: number; key: string } | undefined {
    const t = this.#times;
    const k = this.#keys;
    if (t.length === 0) return undefined;
    const top = { timeMs: t[0], key: k[0] };
    const lastT = t.pop() as number;
    const lastK = k.pop() as string;
    if (t.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= t.length) break;
        const r = l + 1;
        const c = r < t.length && t[r] < t[l] ? r : l;
        if (t[c] >= lastT) break;
        t[i] = t[c];
        k[i] = k[c];
        i = c;
      }
      t[i] = lastT;
      k[i] = lastK;
    }
    return top;
  }
}
