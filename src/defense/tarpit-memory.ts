// The tarpit's memory across sessions: the network of a client whose session reached the tarpit
// is remembered in the state store with a TTL, so its next session starts with its first error
// already delayed. Stored as a verdict-memory record (key v1:verdict:tarpit:connect:<network>:)
// so `portcullis verdicts list` shows it and `portcullis verdicts forget` lifts it at once.
// Store failures never refuse anyone: a lookup that fails counts as "not remembered".

import { networkOf } from '../net/cidr.ts';
import { verdictStoreKey, type StoredVerdict } from '../policy/verdict-memory.ts';
import { REPLY } from '../protocol/replies.ts';
import type { StateStore } from '../store/store.ts';

export type TarpitMemory = {
  /** Whether the client's network is remembered (false on a store failure). */
  isRemembered(address: string): Promise<boolean>;
  /** Remembers the client's network for the configured TTL. */
  remember(address: string, nowMs: number): Promise<void>;
};

export function tarpitMemory(store: StateStore, opts: { ttlSeconds: number; ipv4Prefix: number; ipv6Prefix: number }): TarpitMemory {
  const keyOf = (address: string): string => verdictStoreKey('tarpit', 'connect', networkOf(address, { ipv4: opts.ipv4Prefix, ipv6: opts.ipv6Prefix }), '');
  return {
    async isRemembered(address) {
      try {
        return (await store.get(keyOf(address))) !== null;
      } catch {
        return false;
      }
    },
    async remember(address, nowMs) {
      const record: StoredVerdict = {
        action: 'tempfail',
        reply: REPLY.tooManyErrors,
        reason: 'reached the tarpit (too many errors or unknown recipients)',
        at: nowMs,
      };
      try {
        await store.set(keyOf(address), JSON.stringify(record), opts.ttlSeconds);
      } catch {
        // Not remembered this time: the tarpit still works within each session.
      }
    },
  };
}
