// The embedded state-store backend: one node:sqlite file (state.sqlite in the spool directory)
// shared by every worker process of one node. Owns the schema and the SQL.
// Must never block the event loop for long (purges run in small batches with a yield between
// them) and never read an expired row as present. Each method is one SQL statement, so it is
// atomic across processes; WAL lets readers run beside the one writer, and busy_timeout makes a
// writer wait for another process's lock instead of failing at once.

import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { assertTtlSeconds, StoreError, type StateStore, type StoredEntry } from './store.ts';

export type SqliteStoreOptions = {
  /** Milliseconds since the epoch; injected so tests move time without sleeping. */
  now?: () => number;
  /** How long a statement waits for another process's write lock before failing. */
  busyTimeoutMs?: number;
  /** Rows deleted per purge batch, between yields to the event loop. */
  purgeBatchRows?: number;
};

const SCHEMA = `
CREATE TABLE IF NOT EXISTS state (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS state_expires_at ON state (expires_at);
`;

export class SqliteStore implements StateStore {
  #db: DatabaseSync;
  #now: () => number;
  #purgeBatchRows: number;
  #get: StatementSync;
  #set: StatementSync;
  #delete: StatementSync;
  #increment: StatementSync;
  #setIfAbsent: StatementSync;
  #purgeBatch: StatementSync;
  #scan: StatementSync;

  constructor(file: string, options: SqliteStoreOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#purgeBatchRows = options.purgeBatchRows ?? 500;
    this.#db = new DatabaseSync(file);
    try {
      // busy_timeout first: switching to WAL itself needs the lock another process may hold.
      this.#db.exec(`PRAGMA busy_timeout = ${Math.trunc(options.busyTimeoutMs ?? 5000)}`);
      this.#db.exec('PRAGMA journal_mode = WAL');
      // State is a cache of verdicts, not mail: losing the last transactions on power loss is fine.
      this.#db.exec('PRAGMA synchronous = NORMAL');
      this.#db.exec(SCHEMA);
    } catch (err) {
      this.#db.close();
      throw new StoreError(`cannot open state store ${file}`, { cause: err });
    }
    this.#get = this.#db.prepare('SELECT value FROM state WHERE key = ? AND expires_at > ?');
    this.#set = this.#db.prepare(
      `INSERT INTO state (key, value, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at`,
    );
    this.#delete = this.#db.prepare('DELETE FROM state WHERE key = ?');
    // One statement: an expired row restarts at 1 with the new TTL; a live one keeps its TTL.
    this.#increment = this.#db.prepare(
      `INSERT INTO state (key, value, expires_at) VALUES (:key, '1', :expiresAt)
       ON CONFLICT (key) DO UPDATE SET
         value = CASE WHEN expires_at > :now THEN CAST(CAST(value AS INTEGER) + 1 AS TEXT) ELSE '1' END,
         expires_at = CASE WHEN expires_at > :now THEN expires_at ELSE excluded.expires_at END
       RETURNING CAST(value AS INTEGER) AS count`,
    );
    // The upsert's WHERE leaves a live row alone, so changes is 0 exactly when the key was present.
    this.#setIfAbsent = this.#db.prepare(
      `INSERT INTO state (key, value, expires_at) VALUES (:key, :value, :expiresAt)
       ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
       WHERE state.expires_at <= :now`,
    );
    // From the prefix on, in key order (the primary key), keeping the rows that start with it.
    this.#scan = this.#db.prepare(
      'SELECT key, value, expires_at FROM state WHERE key >= :prefix AND substr(key, 1, length(:prefix)) = :prefix AND expires_at > :now ORDER BY key LIMIT :limit',
    );
    this.#purgeBatch = this.#db.prepare(
      'DELETE FROM state WHERE key IN (SELECT key FROM state WHERE expires_at <= ? LIMIT ?)',
    );
  }

  async get(key: string): Promise<string | null> {
    const row = this.#run(() => this.#get.get(key, this.#now()));
    return row === undefined ? null : String(row.value);
  }

  async set(key: string, value: string, ttlSeconds: number): Promise<void> {
    assertTtlSeconds(ttlSeconds);
    this.#run(() => this.#set.run(key, value, this.#expiresAt(ttlSeconds)));
  }

  async delete(key: string): Promise<void> {
    this.#run(() => this.#delete.run(key));
  }

  async increment(key: string, ttlSeconds: number): Promise<number> {
    assertTtlSeconds(ttlSeconds);
    const now = this.#now();
    const row = this.#run(() => this.#increment.get({ key, expiresAt: now + ttlSeconds * 1000, now }));
    return Number(row?.count);
  }

  async setIfAbsent(key: string, value: string, ttlSeconds: number): Promise<boolean> {
    assertTtlSeconds(ttlSeconds);
    const now = this.#now();
    const result = this.#run(() => this.#setIfAbsent.run({ key, value, expiresAt: now + ttlSeconds * 1000, now }));
    return Number(result.changes) > 0;
  }

  async scan(prefix: string, limit: number): Promise<StoredEntry[]> {
    const rows = this.#run(() => this.#scan.all({ prefix, now: this.#now(), limit: Math.max(0, Math.trunc(limit)) }));
    return rows.map((r) => ({ key: String(r.key), value: String(r.value), expiresAtMs: Number(r.expires_at) }));
  }

  async purgeExpired(): Promise<number> {
    const now = this.#now();
    let purged = 0;
    for (;;) {
      const result = this.#run(() => this.#purgeBatch.run(now, this.#purgeBatchRows));
      const changes = Number(result.changes);
      purged += changes;
      if (changes < this.#purgeBatchRows) return purged;
      // Let sessions run between batches: a large purge must not stall the SMTP dialogue.
      await yieldToEventLoop();
    }
  }

  async close(): Promise<void> {
    if (this.#db.isOpen) this.#db.close();
  }

  #expiresAt(ttlSeconds: number): number {
    return this.#now() + ttlSeconds * 1000;
  }

  #run<T>(statement: () => T): T {
    try {
      return statement();
    } catch (err) {
      throw new StoreError('state store (sqlite) operation failed', { cause: err });
    }
  }
}
