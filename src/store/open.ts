// Opens the state store named by the `state.store` setting: "sqlite" (the embedded default, a file
// state.sqlite in the given directory, normally the spool directory) or "redis://host:port/db".
// Owns only the choice of backend; must never guess: any other setting is refused.

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { SqliteStore } from './sqlite.ts';
import type { StateStore } from './store.ts';

export const SQLITE_STATE_FILE = 'state.sqlite';

export type OpenStateStoreOptions = {
  /** Where the sqlite file lives. */
  dir: string;
  /** Milliseconds since the epoch, for the sqlite backend (Redis keeps its own clock). */
  now?: () => number;
};

export class StoreSettingError extends Error {
  readonly code = 'STORE_SETTING_INVALID';
  constructor(message: string) {
    super(message);
    this.name = 'StoreSettingError';
  }
}

export async function openStateStore(setting: string, options: OpenStateStoreOptions): Promise<StateStore> {
  if (setting === 'sqlite') {
    mkdirSync(options.dir, { recursive: true });
    return new SqliteStore(path.join(options.dir, SQLITE_STATE_FILE), options.now === undefined ? {} : { now: options.now });
  }
  if (setting.startsWith('redis://') || setting.startsWith('rediss://')) {
    // ioredis is loaded only for a Redis store: a node on sqlite never carries it.
    const { RedisStore } = await import('./redis.ts');
    return RedisStore.open(setting);
  }
  // The value is not echoed: a mistyped Redis URL may still carry its password.
  throw new StoreSettingError('state.store must be "sqlite" or "redis://host:port/db"');
}
