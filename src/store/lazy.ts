// A state store that is opened the first time something uses it. The server starts without
// touching the store (a full disk, an unreachable Redis): with no greylisting and no check that
// remembers refusals across sessions it is never opened at all, and when one is configured a
// failure to open is the StoreError every caller already turns into a tempfail.
// Owns only the deferred open and its retry pacing; never keeps data of its own.

import { StoreError, type StateStore, type StoredEntry } from './store.ts';

/** After a failed open, callers fail fast for this long before the next attempt. */
const RETRY_AFTER_MS = 5_000;

export type LazyStateStoreOptions = {
  /** Called once the backend is open (first use) or could not be opened (at most once per retry pause). */
  onOpen?: () => void;
  onOpenFailed?: (err: unknown) => void;
  now?: () => number;
};

export class LazyStateStore implements StateStore {
  readonly #open: () => Promise<StateStore>;
  readonly #opts: LazyStateStoreOptions;
  #store: StateStore | null = null;
  #opening: Promise<StateStore> | null = null;
  #failedAtMs = -Infinity;
  #lastError: unknown = null;
  #isClosed = false;

  constructor(open: () => Promise<StateStore>, options: LazyStateStoreOptions = {}) {
    this.#open = open;
    this.#opts = options;
  }

  /** Whether the backend has been opened (something used the store). */
  get isOpen(): boolean {
    return this.#store !== null;
  }

  async get(key: string): Promise<string | null> {
    return (await this.#backend()).get(key);
  }

  async set(key: string, value: string, ttlSeconds: number): Promise<void> {
    return (await this.#backend()).set(key, value, ttlSeconds);
  }

  async delete(key: string): Promise<void> {
    return (await this.#backend()).delete(key);
  }

  async increment(key: string, ttlSeconds: number): Promise<number> {
    return (await this.#backend()).increment(key, ttlSeconds);
  }

  async setIfAbsent(key: string, value: string, ttlSeconds: number): Promise<boolean> {
    return (await this.#backend()).setIfAbsent(key, value, ttlSeconds);
  }

  async scan(prefix: string, limit: number): Promise<StoredEntry[]> {
    return (await this.#backend()).scan(prefix, limit);
  }

  /** A store nobody has used has nothing to purge: this never opens it. */
  async purgeExpired(): Promise<number> {
    return this.#store === null ? 0 : this.#store.purgeExpired();
  }

  async close(): Promise<void> {
    this.#isClosed = true;
    const store = this.#store ?? (await this.#opening?.catch(() => null)) ?? null;
    this.#store = null;
    await store?.close();
  }

  #backend(): Promise<StateStore> {
    if (this.#store !== null) return Promise.resolve(this.#store);
    if (this.#isClosed) return Promise.reject(new StoreError('state store closed'));
    if (this.#opening !== null) return this.#opening;
    const now = this.#opts.now ?? Date.now;
    // A store that just failed to open (disk full, Redis down) is not retried by every caller.
    if (now() - this.#failedAtMs < RETRY_AFTER_MS) {
      return Promise.reject(new StoreError('state store unavailable', { cause: this.#lastError }));
    }
    this.#opening = this.#open().then(
      (store) => {
        this.#opening = null;
        if (this.#isClosed) {
          void store.close();
          throw new StoreError('state store closed');
        }
        this.#store = store;
        this.#opts.onOpen?.();
        return store;
      },
      (err: unknown) => {
        this.#opening = null;
        this.#failedAtMs = now();
        this.#lastError = err;
        this.#opts.onOpenFailed?.(err);
        throw err instanceof StoreError ? err : new StoreError('cannot open the state store', { cause: err });
      },
    );
    return this.#opening;
  }
}
