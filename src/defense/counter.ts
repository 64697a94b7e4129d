// Concurrent connections per key (one client address, one client network, the whole process):
// a map of live counts where a key at zero is deleted, so memory follows live connections only.
// Pure bookkeeping; the decision which limit applies is server/admission.ts's.

export class ConcurrencyCounter {
  readonly #counts = new Map<string, number>();
  #total = 0;

  get(key: string): number {
    return this.#counts.get(key) ?? 0;
  }

  get total(): number {
    return this.#total;
  }

  /** Keys with a live count, for tests and bounds. */
  get size(): number {
    return this.#counts.size;
  }

  add(key: string): void {
    this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
    this.#total++;
  }

  remove(key: string): void {
    const n = this.#counts.get(key);
    if (n === undefined) return;
    if (n <= 1) this.#counts.delete(key);
    else this.#counts.set(key, n - 1);
    this.#total--;
  }
}
