// The shared state-store backend: Redis, so several Portcullis nodes behind a load balancer share
// greylist records and verdict memory. Owns the Redis commands and the connection's lifetime.
// Must never let a Redis error crash the process (an 'error' listener is always attached), never
// queue commands without bound while Redis is away (maxRetriesPerRequest: 1), and never leave a
// counter without a TTL (INCR and EXPIRE run in one Lua script). Redis expires keys itself.

import { Redis } from 'ioredis';
import { assertTtlSeconds, StoreError, type StateStore, type StoredEntry } from './store.ts';

// Atomic: INCR creates the key at 1 without a TTL, so the TTL is set only when there is none,
// which is exactly when this call created it.
const INCREMENT_SCRIPT = `
local count = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
`;

export type RedisStoreOptions = {
  /** Bound on connecting and on each command, so a hung Redis becomes a tempfail, not a stall. */
  timeoutMs?: number;
};

export class RedisStore implements StateStore {
  #client: Redis;
  #timeoutMs: number;
  #lastError: Error | null = null;

  private constructor(client: Redis, timeoutMs: number) {
    this.#client = client;
    this.#timeoutMs = timeoutMs;
    // Security: without a listener, a dropped connection would crash every session in the process.
    this.#client.on('error', (err: Error) => {
      this.#lastError = err;
    });
    this.#client.on('ready', () => {
      this.#lastError = null;
    });
  }

  /** Connects to `redis://host:port/db` (or `rediss://` for TLS) and fails if Redis does not answer. */
  static async open(url: string, options: RedisStoreOptions = {}): Promise<RedisStore> {
    const timeoutMs = options.timeoutMs ?? 2000;
    const client = new Redis(url, {
      lazyConnect: true,
      maxRetriesPerRequest: 1,
      connectTimeout: timeoutMs,
      // Not ioredis's commandTimeout: its timers outlive the command and hold up process exit.
    });
    const store = new RedisStore(client, timeoutMs);
    try {
      await client.connect();
    } catch (err) {
      client.disconnect();
      throw new StoreError(`cannot connect to the state store at ${redactUrl(url)}`, { cause: err });
    }
    return store;
  }

  async get(key: string): Promise<string | null> {
    return this.#run(() => this.#client.get(key));
  }

  async set(key: string, value: string, ttlSeconds: number): Promise<void> {
    assertTtlSeconds(ttlSeconds);
    await this.#run(() => this.#client.set(key, value, 'EX', ttlSeconds));
  }

  async delete(key: string): Promise<void> {
    await this.#run(() => this.#client.del(key));
  }

  async increment(key: string, ttlSeconds: number): Promise<number> {
    assertTtlSeconds(ttlSeconds);
    const count = await this.#run(() => this.#client.eval(INCREMENT_SCRIPT, 1, key, ttlSeconds));
    return Number(count);
  }

  async setIfAbsent(key: string, value: string, ttlSeconds: number): Promise<boolean> {
    assertTtlSeconds(ttlSeconds);
    const reply = await this.#run(() => this.#client.set(key, value, 'EX', ttlSeconds, 'NX'));
    return reply === 'OK';
  }

  /** SCAN with MATCH (the prefix's glob characters escaped), then each key's value and PTTL. */
  async scan(prefix: string, limit: number): Promise<StoredEntry[]> {
    const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
    const out: StoredEntry[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await this.#run(() => this.#client.scan(cursor, 'MATCH', pattern, 'COUNT', 500));
      cursor = next;
      if (keys.length === 0) continue;
      const pipeline = this.#client.pipeline();
      for (const key of keys) pipeline.get(key).pttl(key);
      const replies = (await this.#run(() => pipeline.exec())) ?? [];
      const now = Date.now();
      for (let i = 0; i < keys.length && out.length < limit; i++) {
        const value = replies[2 * i]?.[1];
        const ttl = Number(replies[2 * i + 1]?.[1]);
        // Gone between SCAN and GET, or without a TTL (not ours: every key we set has one).
        if (typeof value !== 'string' || !(ttl > 0)) continue;
        out.push({ key: keys[i]!, value, expiresAtMs: now + ttl });
      }
    } while (cursor !== '0' && out.length < limit);
    return out;
  }

  async purgeExpired(): Promise<number> {
    return 0;
  }

  async close(): Promise<void> {
    if (this.#client.status === 'end') return;
    if (this.#client.status !== 'ready') {
      // Not connected (Redis went away): stop the reconnect timer, or it keeps the process alive.
      this.#client.disconnect();
      return;
    }
    try {
      await this.#client.quit();
    } catch {
      this.#client.disconnect();
    }
  }

  async #run<T>(command: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer from Redis in ${this.#timeoutMs} ms`)), this.#timeoutMs);
    });
    try {
      return await Promise.race([command(), timeout]);
    } catch (err) {
      const connection = this.#lastError === null ? '' : ` (last connection error: ${this.#lastError.message})`;
      throw new StoreError(`state store (redis) operation failed${connection}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The URL may carry a password (`redis://:secret@host`); logs and errors get it without one. */
function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable URL)';
  }
}
