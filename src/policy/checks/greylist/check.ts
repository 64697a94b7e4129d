// Greylisting: the first delivery attempt of a (client network, sender, recipient) triplet is
// temp-failed; a retry from a new connection after the delay is accepted, as real MTAs retry.
// Defaults follow postgrey: 300 s delay, 2-day retry window, records kept 35 days, clients grouped
// by /24 and /64, a network auto-allowed after 5 passed retries.
// Never remembers its temp-fail by client network (no TTL on the verdict): that would refuse the
// legitimate retry. Within a session, verdict memory refuses the same recipient again after RSET
// whatever time has passed, because no real MTA retries that way.

import { REPLY } from '../../../protocol/replies.ts';
import { StoreError, type StateStore } from '../../../store/store.ts';
import type { PolicyVerdict } from '../../../protocol/machine.ts';
import { BoundedCache } from '../../../util/bounded-cache.ts';
import type { Check, CheckContext } from '../../check.ts';
import { clientNetwork } from '../../network.ts';

export type GreylistOptions = {
  store: StateStore;
  stage: 'rcpt' | 'data';
  delaySeconds: number;
  retryWindowSeconds: number;
  recordTtlSeconds: number;
  autoAllowAfter: number;
  now: () => number;
};

export const GREYLIST_DEFAULTS = {
  delaySeconds: 300,
  retryWindowSeconds: 2 * 86_400,
  recordTtlSeconds: 35 * 86_400,
  autoAllowAfter: 5,
} as const;

type TripletRecord = { firstMs: number; isPassed: boolean };

/** The state-store key of one triplet; `network` as clientNetwork() gives it ("192.0.2.0/24"). */
export function tripletKey(network: string, sender: string, recipient: string): string {
  return `v1:grey:${network}:${sender.toLowerCase()}:${recipient.toLowerCase()}`;
}

/**
 * How long this process trusts what it learnt that only changes slowly: a passed triplet and an
 * auto-allowed network stay so for weeks (until their records expire), so re-reading them from
 * the store for every message of a busy sender buys nothing. Bounded in entries.
 */
const KNOWN_GOOD_CACHE_MS = 10 * 60_000;
const NO_OPINION: PolicyVerdict = { action: 'continue' };
const KNOWN_GOOD_MAX_ENTRIES = 10_000;

export function greylistCheck(opts: GreylistOptions): Check {
  const { store } = opts;
  const knownGood = new BoundedCache<string, true>(KNOWN_GOOD_MAX_ENTRIES); // triplet or network key
  const isKnownGood = (key: string, nowMs: number): boolean => knownGood.get(key, nowMs) === true;
  const learnGood = (key: string, nowMs: number): void => knownGood.set(key, true, nowMs + KNOWN_GOOD_CACHE_MS);
  /** One triplet: 'pass' or the reason it is not passed yet. */
  const judge = async (network: string, sender: string, recipient: string): Promise<'pass' | string> => {
    const key = tripletKey(network, sender, recipient);
    const nowMs = opts.now();
    const text = await store.get(key);
    const rec = text === null ? null : (JSON.parse(text) as TripletRecord);
    if (rec?.isPassed) return 'pass';
    if (rec === null || nowMs - rec.firstMs > opts.retryWindowSeconds * 1000) {
      await store.set(key, JSON.stringify({ firstMs: nowMs, isPassed: false } satisfies TripletRecord), opts.recordTtlSeconds);
      return 'new triplet';
    }
    if (nowMs - rec.firstMs < opts.delaySeconds * 1000) return `retried after ${Math.round((nowMs - rec.firstMs) / 1000)} s, before the ${opts.delaySeconds} s delay`;
    await store.set(key, JSON.stringify({ firstMs: rec.firstMs, isPassed: true } satisfies TripletRecord), opts.recordTtlSeconds);
    await store.increment(`v1:grey-passed:${network}`, opts.recordTtlSeconds);
    return 'pass';
  };
  /** The network of the last client asked about, and its key: its next message needs the same. */
  let lastNetwork = { address: '', network: '', networkKey: '' };
  const networkOf = (address: string): { network: string; networkKey: string } => {
    if (lastNetwork.address !== address) {
      const network = clientNetwork(address);
      lastNetwork = { address, network, networkKey: `v1:grey-passed:${network}` };
    }
    return lastNetwork;
  };
  /** The last triplet's key: a busy sender's next message (same sender, same recipient) reuses the
   *  string, so the known-good lookup builds nothing and hashes nothing new. */
  let lastTriplet = { network: '', sender: '', recipient: '', key: '' };
  const knownTripletKey = (network: string, sender: string, recipient: string): string => {
    const t = lastTriplet;
    if (t.network !== network || t.sender !== sender || t.recipient !== recipient) lastTriplet = { network, sender, recipient, key: tripletKey(network, sender, recipient) };
    return lastTriplet.key;
  };
  const recipientsOf = (ctx: CheckContext): string[] =>
    opts.stage === 'rcpt' ? (ctx.recipient === null ? [] : [ctx.recipient.address]) : (ctx.transaction?.recipients.map((r) => r.address) ?? []);
  return {
    name: 'greylist',
    stages: [opts.stage],
    // Synchronous while memory answers (no store round trip): a known-good network or triplets.
    run: (ctx) => {
      const { network, networkKey } = networkOf(ctx.session.peer.address);
      const nowMs = opts.now();
      if (isKnownGood(networkKey, nowMs)) return NO_OPINION;
      const rp = ctx.transaction?.reversePath;
      const sender = rp ? `${rp.localPart}@${rp.domain}` : '';
      const pending = recipientsOf(ctx).filter((recipient) => !isKnownGood(knownTripletKey(network, sender, recipient), nowMs));
      if (pending.length === 0) return NO_OPINION;
      // A state store that is down is an operational failure, not our bug: a typed tempfail
      // (as any MTA defers when its greylisting service is away), not a thrown error.
      return judgeAll(network, networkKey, sender, pending, nowMs).catch((err: unknown): PolicyVerdict => {
        if (!(err instanceof StoreError)) throw err;
        return { action: 'tempfail', reply: REPLY.localError, check: 'greylist', reason: `state store unavailable: ${err.message}` };
      });
    },
  };

  async function judgeAll(network: string, networkKey: string, sender: string, pending: readonly string[], nowMs: number): Promise<PolicyVerdict> {
    const passed = Number((await store.get(networkKey)) ?? '0');
    if (passed >= opts.autoAllowAfter) {
      learnGood(networkKey, nowMs);
      return { action: 'continue' };
    }
    for (const recipient of pending) {
      const result = await judge(network, sender, recipient);
      if (result !== 'pass') return { action: 'tempfail', reply: REPLY.greylisted, check: 'greylist', reason: `${result}: ${network} <${sender}> <${recipient}>` };
      learnGood(tripletKey(network, sender, recipient), nowMs);
    }
    return { action: 'continue' };
  }
}
