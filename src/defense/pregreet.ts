// The pregreet (early talker) test's memory across sessions, in the state store: a network that
// talked before the greeting is remembered as a verdict-memory record
// (v1:verdict:pregreet:connect:<network>:) so `portcullis verdicts list` shows it and `forget`
// lifts it; a network that waited is remembered as passed (v1:pregreet:pass:<network>) and is not
// paused again until that expires. Store failures never refuse anyone: a failed lookup is
// "unknown" (the client is paused and judged again), a failed write is simply not remembered.

import { networkOf } from '../net/cidr.ts';
import { verdictStoreKey, type StoredVerdict } from '../policy/verdict-memory.ts';
import type { Reply } from '../protocol/replies.ts';
import type { StateStore } from '../store/store.ts';

export const PREGREET_PASS_PREFIX = 'v1:pregreet:pass:';

export type PregreetState = 'refused' | 'passed' | 'unknown';

export type PregreetMemory = {
  state(address: string): Promise<PregreetState>;
  rememberRefused(address: string, reply: Reply, nowMs: number): Promise<void>;
  rememberPassed(address: string): Promise<void>;
};

export function pregreetMemory(store: StateStore, opts: { rememberSeconds: number; passTtlSeconds: number; ipv4Prefix: number; ipv6Prefix: number }): PregreetMemory {
  const networkOfAddress = (address: string): string => networkOf(address, { ipv4: opts.ipv4Prefix, ipv6: opts.ipv6Prefix });
  const refusedKey = (address: string): string => verdictStoreKey('pregreet', 'connect', networkOfAddress(address), '');
  const passKey = (address: string): string => `${PREGREET_PASS_PREFIX}${networkOfAddress(address)}`;
  return {
    async state(address) {
      try {
        if ((await store.get(refusedKey(address))) !== null) return 'refused';
        return (await store.get(passKey(address))) !== null ? 'passed' : 'unknown';
      } catch {
        return 'unknown';
      }
    },
    async rememberRefused(address, reply, nowMs) {
      if (opts.rememberSeconds <= 0) return;
      const record: StoredVerdict = { action: reply.code >= 500 ? 'reject' : 'disconnect', reply, reason: 'talked before the greeting (pregreet)', at: nowMs };
      try {
        await store.set(refusedKey(address), JSON.stringify(record), opts.rememberSeconds);
      } catch {
        // Not remembered this time.
      }
    },
    async rememberPassed(address) {
      try {
        await store.set(passKey(address), '1', opts.passTtlSeconds);
      } catch {
        // Paused again next time.
      }
    },
  };
}
