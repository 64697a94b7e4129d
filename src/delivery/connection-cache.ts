// The outbound connection cache: idle, ready sessions kept per destination so the next job to
// the same next hop skips the TCP, greeting, EHLO and TLS round trips (Postfix's
// smtp_connection_cache_on_demand habit). Never hands out a session twice at once, never keeps
// one past its idle time, age or use count, and never keeps more than its bounds.
// The session itself sends RSET before a reused transaction (RFC 5321 4.1.1.5), so a connection
// the peer dropped while idle is found out before any of the job is sent.

import type { ClientConnection } from './smtp-connection.ts';

export type ConnectionCacheOptions = {
  /** An idle connection is closed (QUIT) after this long unused. Postfix: 2 s. */
  idleMs: number;
  /** No transaction starts on a connection older than this. Postfix smtp_connection_reuse_time_limit: 300 s. */
  maxAgeMs: number;
  /** Transactions per connection. */
  maxUses: number;
  /** Idle connections kept per destination, and in all. */
  maxIdlePerDestination: number;
  maxIdle: number;
};

export const DEFAULT_CACHE_OPTIONS: ConnectionCacheOptions = {
  idleMs: 5_000,
  maxAgeMs: 300_000,
  maxUses: 100,
  maxIdlePerDestination: 20,
  maxIdle: 200,
};

type Entry = { conn: ClientConnection; timer: NodeJS.Timeout };

export class ConnectionCache {
  readonly #opts: ConnectionCacheOptions;
  readonly #idle = new Map<string, Entry[]>();
  #count = 0;

  constructor(opts: Partial<ConnectionCacheOptions> = {}) {
    this.#opts = { ...DEFAULT_CACHE_OPTIONS, ...opts };
  }

  get idleCount(): number {
    return this.#count;
  }

  /** An idle, usable connection to `key`, removed from the cache; null when there is none. */
  take(key: string): ClientConnection | null {
    const list = this.#idle.get(key);
    while (list !== undefined && list.length > 0) {
      const e = list[list.length - 1];
      this.#forget(key, e);
      if (this.#isReusable(e.conn)) return e.conn;
      void e.conn.quit();
    }
    return null;
  }

  /** Gives a connection back after a transaction; closes it instead when it may not be reused. */
  put(key: string, conn: ClientConnection): void {
    const list = this.#idle.get(key) ?? [];
    if (!this.#isReusable(conn) || list.length >= this.#opts.maxIdlePerDestination || this.#count >= this.#opts.maxIdle) {
      void conn.quit();
      return;
    }
    const entry: Entry = {
      conn,
      timer: setTimeout(() => {
        this.#forget(key, entry);
        void conn.quit();
      }, this.#opts.idleMs),
    };
    entry.timer.unref();
    conn.onIdleClose(() => this.#forget(key, entry));
    list.push(entry);
    this.#idle.set(key, list);
    this.#count++;
  }

  /** Closes every idle connection (QUIT, bounded by the command timeout). */
  async close(): Promise<void> {
    const all: ClientConnection[] = [];
    for (const [key, list] of this.#idle) {
      for (const e of [...list]) {
        this.#forget(key, e);
        all.push(e.conn);
      }
    }
    await Promise.all(all.map((c) => c.quit()));
  }

  #isReusable(conn: ClientConnection): boolean {
    return conn.isUsable && conn.uses < this.#opts.maxUses && Date.now() - conn.openedAtMs < this.#opts.maxAgeMs;
  }

  #forget(key: string, e: Entry): void {
    const list = this.#idle.get(key);
    if (list === undefined) return;
    const i = list.indexOf(e);
    if (i !== -1) {
      list.splice(i, 1);
      this.#count--;
    }
    clearTimeout(e.timer);
    e.conn.onIdleClose(null);
    if (list.length === 0) this.#idle.delete(key);
  }
}
