// The state-store interface the policy engine keeps cross-session memory in (greylist triplets,
// remembered refusals, reputation counters), shared by several worker processes and, with Redis,
// several Portcullis nodes. Owns only the contract; backends live beside it (sqlite.ts, redis.ts)
// and open.ts picks one from the `state.store` setting.
// Must never hold policy logic or key formats: callers own their keys; this stores strings.

/**
 * Every method is atomic on its own across all processes sharing the store. Expired keys read as
 * absent everywhere, whether or not they have been purged yet. TTLs are whole seconds, at least 1.
 */
export interface StateStore {
  get(key: string): Promise<string | null>;
  /** Sets the value and (re)starts its TTL. */
  set(key: string, value: string, ttlSeconds: number): Promise<void>;
  delete(key: string): Promise<void>;
  /** Adds 1 and returns the new count; a key that is absent (or expired) starts at 1 with this TTL,
   *  and later increments keep the TTL it was created with. */
  increment(key: string, ttlSeconds: number): Promise<number>;
  /** Sets the value only when the key is absent (or expired); true when this call set it. */
  setIfAbsent(key: string, value: string, ttlSeconds: number): Promise<boolean>;
  /**
   * The live records whose key starts with `prefix`, at most `limit` of them (in no promised
   * order). For operator commands (`portcullis verdicts list`), not for the SMTP path: it may
   * walk the whole keyspace.
   */
  scan(prefix: string, limit: number): Promise<StoredEntry[]>;
  /** Removes expired records and returns how many; a backend that expires keys itself returns 0. */
  purgeExpired(): Promise<number>;
  close(): Promise<void>;
}

export type StoredEntry = { key: string; value: string; /** Milliseconds since the epoch. */ expiresAtMs: number };

/** An operational store failure (disk, lock timeout, lost Redis connection): callers turn it into
 *  a tempfail, never an accept. */
export class StoreError extends Error {
  readonly code = 'STORE_FAILED';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreError';
  }
}

/** Our bug, not an operational failure: a TTL Redis would refuse (EX needs a positive integer). */
export function assertTtlSeconds(ttlSeconds: number): void {
  if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1) {
    throw new RangeError(`ttlSeconds must be a positive integer, got ${ttlSeconds}`);
  }
}
