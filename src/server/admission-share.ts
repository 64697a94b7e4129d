// Node-wide admission counts across worker processes, over the cluster IPC channel: each worker's
// PoolClient asks the primary's AdmissionPoolServer for a connection past the worker's own share
// (admission.ts explains the split). Requests and releases of one turn of the event loop travel in
// one message each way, as the workers' spool reports do. Every request is bounded: with no answer
// within POOL_TIMEOUT_MS it is answered "unavailable" (admission then fails open and logs it), and
// a grant that arrives later is given back at once. A worker that exits gives back all it held.

import { AdmissionCounts, type AdmissionLimits, type AdmissionPool, type LimitRule } from './admission.ts';
import type { NetworkPrefixes } from '../policy/network.ts';

/** How long a worker waits for the primary before admitting without it. */
export const POOL_TIMEOUT_MS = 2000;

export type AdmissionRequests = { t: 'admit'; items: { id: number; address: string }[] } | { t: 'admit-release'; ids: number[] };
export type AdmissionAnswers = { t: 'admit-answers'; items: { id: number; rule: LimitRule | null }[] };

type Answer = Awaited<ReturnType<AdmissionPool['request']>>;

export class PoolClient implements AdmissionPool {
  readonly #send: (m: AdmissionRequests) => void;
  readonly #timeoutMs: number;
  #nextId = 1;
  readonly #waiting = new Map<number, { resolve: (a: Answer) => void; timer: NodeJS.Timeout }>();
  #requests: { id: number; address: string }[] = [];
  #releases: number[] = [];

  constructor(send: (m: AdmissionRequests) => void, timeoutMs = POOL_TIMEOUT_MS) {
    this.#send = send;
    this.#timeoutMs = timeoutMs;
  }

  request(address: string): Promise<Answer> {
    const id = this.#nextId++;
    return new Promise<Answer>((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        resolve({ kind: 'unavailable', reason: `no answer within ${this.#timeoutMs} ms` });
      }, this.#timeoutMs);
      this.#waiting.set(id, { resolve, timer });
      this.#requests.push({ id, address });
      if (this.#requests.length === 1) queueMicrotask(() => this.#flushRequests());
    });
  }

  /** The primary's answers (call from the worker's message handler). */
  onAnswers(m: AdmissionAnswers): void {
    for (const { id, rule } of m.items) {
      const w = this.#waiting.get(id);
      if (w === undefined) {
        // Answered after its deadline (the connection was admitted without it): give it back.
        if (rule === null) this.#release(id);
        continue;
      }
      this.#waiting.delete(id);
      clearTimeout(w.timer);
      if (rule !== null) w.resolve({ kind: 'refused', rule });
      else {
        let isReleased = false;
        w.resolve({
          kind: 'granted',
          release: () => {
            if (isReleased) return;
            isReleased = true;
            this.#release(id);
          },
        });
      }
    }
  }

  #release(id: number): void {
    this.#releases.push(id);
    if (this.#releases.length === 1) queueMicrotask(() => this.#flushReleases());
  }

  #flushRequests(): void {
    const items = this.#requests;
    this.#requests = [];
    if (items.length > 0) this.#trySend({ t: 'admit', items });
  }

  #flushReleases(): void {
    const ids = this.#releases;
    this.#releases = [];
    if (ids.length > 0) this.#trySend({ t: 'admit-release', ids });
  }

  #trySend(m: AdmissionRequests): void {
    try {
      this.#send(m);
    } catch {
      // The channel is gone (the primary is stopping): the requests time out and fail open.
    }
  }
}

/** The primary's side: the node's remainder of every limit, and what each worker holds of it. */
export class AdmissionPoolServer {
  readonly #counts: AdmissionCounts;
  readonly #held = new Map<number, Map<number, () => void>>();

  constructor(pool: AdmissionLimits, prefixes: NetworkPrefixes) {
    this.#counts = new AdmissionCounts(pool, prefixes);
  }

  get liveCount(): number {
    return this.#counts.liveCount;
  }

  /** One worker's message; the answer to send back, if any. */
  handle(workerId: number, m: AdmissionRequests, nowMs: number): AdmissionAnswers | null {
    let held = this.#held.get(workerId);
    if (held === undefined) {
      held = new Map();
      this.#held.set(workerId, held);
    }
    if (m.t === 'admit-release') {
      for (const id of m.ids) {
        held.get(id)?.();
        held.delete(id);
      }
      return null;
    }
    const items: AdmissionAnswers['items'] = [];
    for (const { id, address } of m.items) {
      const taken = this.#counts.take(String(address), nowMs, true);
      if ('release' in taken) {
        held.set(id, taken.release);
        items.push({ id, rule: null });
      } else items.push({ id, rule: taken.rule });
    }
    return { t: 'admit-answers', items };
  }

  /** A worker exited: its connections are gone, and so is what it held. */
  workerGone(workerId: number): void {
    for (const release of this.#held.get(workerId)?.values() ?? []) release();
    this.#held.delete(workerId);
  }
}

export function isAdmissionRequests(m: unknown): m is AdmissionRequests {
  const t = (m as { t?: unknown } | null)?.t;
  return t === 'admit' || t === 'admit-release';
}
