// A bounded cache: a Map with a maximum number of entries, each with an optional expiry. A Map
// iterates in insertion order, so the first key is the oldest entry: it is the one dropped when
// the cache is full (a set moves its key to the end). Time comes in as a number (no clock);
// a lookup allocates nothing. The one copy of what the policy pipeline and the checks each wrote
// by hand.

type Entry<V> = { value: V; expiresMs: number };

export class BoundedCache<K, V> {
  readonly #entries = new Map<K, Entry<V>>();
  readonly #maxEntries: number;

  /** `maxEntries` 0 (or less) keeps nothing. */
  constructor(maxEntries: number) {
    this.#maxEntries = maxEntries;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The value for `key` unless it expired at or before `nowMs` (an expired entry is dropped). */
  get(key: K, nowMs: number): V | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresMs > nowMs) return entry.value;
    this.#entries.delete(key);
    return undefined;
  }

  /** Keeps `value` until `expiresMs` (default: until it is the oldest of a full cache). */
  set(key: K, value: V, expiresMs = Infinity): void {
    if (this.#maxEntries <= 0) return;
    this.#entries.delete(key);
    while (this.#entries.size >= this.#maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.set(key, { value, expiresMs });
  }

  delete(key: K): void {
    this.#entries.delete(key);
  }

  clear(): void {
    this.#entries.clear();
  }
}
