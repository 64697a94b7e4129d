// DNS block and allow lists (DNSBL/DNSWL) with weighted scores, on the model of Postfix's
// postscreen_dnsbl_sites: each list is asked about the client address (all lists in parallel),
// every list whose A answer matches its patterns adds its weight (negative for allow lists), and
// the sum decides: at or above `threshold` a refusal naming the block lists, at or below
// `allowThreshold` an accept that ends the stage, otherwise no opinion.
// A zone may appear in several lists with different patterns and weights (dnswl.org's trust
// levels): it is asked once per client.
// Owns the lookup cache of this worker (per query name, by answer TTL, bounded, shared in-flight
// lookups). Never turns a DNS failure into a refusal: a list that does not answer in time counts
// as "not listed" and is not cached. Never counts a 127.255.255.x answer (a list's "query
// refused / error" code) as a listing. RFC 5782 2.1 (IPv4 names), 2.4 (IPv6 nibbles), 2.3 (the
// 127.0.0.0/8 answer range).
//
// Hand-written rather than a dependency: the npm DNSBL packages (`dnsbl`, `@ehp/dnsbl`,
// `dnsbl-lookup`, the deprecated `dronebl`) answer listed / not listed per list and stop there:
// no weights, no answer patterns, no TTL-aware cache, no error-code handling, and none takes our
// DnsClient (configured servers, bounded tries).

import { isDnsName } from '../../../net/domain.ts';
import { ipv4Octets, ipv6Groups, isIPv4, isIPv6, unmapIPv4 } from '../../../net/ip.ts';
import type { DnsClient, ResolvedA } from '../../../dns/resolver.ts';
import type { PolicyVerdict } from '../../../protocol/machine.ts';
import { REPLY } from '../../../protocol/replies.ts';
import { BoundedCache } from '../../../util/bounded-cache.ts';
import type { Check } from '../../check.ts';
import { parseAnswerPattern } from './pattern.ts';

export type DnsListSpec = {
  zone: string;
  /** Added to the score when the list answers with a matching address; negative = allow list. */
  weight: number;
  /** postscreen-style patterns (`127.0.0.[2..11]`); [] = any 127.0.0.0/8 answer. */
  answers: readonly string[];
};

export type DnsblOptions = {
  lists: readonly DnsListSpec[];
  /** A score at or above this refuses the client. */
  threshold: number;
  /** A score at or below this accepts the client for the stage (later checks are skipped); absent = never. */
  allowThreshold?: number;
  stage: 'connect' | 'rcpt';
  /** reject = 554 5.7.1, tempfail = 450 4.7.1 (421 4.7.1 and disconnect at the connect stage). */
  action: 'reject' | 'tempfail';
  dns: DnsClient;
  /** Budget for all lookups of one client (they run in parallel). */
  lookupTimeoutMs: number;
  /** How long "not listed" is cached: node reports no TTL (SOA minimum) for NXDOMAIN. */
  negativeCacheSeconds: number;
  maxCacheEntries: number;
  /** Milliseconds since the epoch. */
  now: () => number;
  log?: { warn(obj: object, msg: string): void };
};

export const DNSBL_DEFAULTS = {
  threshold: 1,
  action: 'reject',
  stage: 'rcpt',
  lookupTimeoutMs: 5000,
  negativeCacheSeconds: 60,
  maxCacheEntries: 10_000,
} as const;

/** Longest a cached answer (and so a remembered refusal) lives, whatever TTL a list publishes. */
const MAX_CACHE_SECONDS = 86_400;
const NO_OPINION: PolicyVerdict = { action: 'continue' };
/** A list answering with its error code is logged at most this often. */
const ERROR_LOG_INTERVAL_MS = 60_000;
/** The check's own time budget exceeds the lookups' so the lookups' timer decides, not the pipeline's. */
const TIMEOUT_MARGIN_MS = 250;

/** RFC 5782 2.3: a listing is an address in 127.0.0.0/8 (an answer elsewhere is a broken or hijacking resolver). */
function isDefaultListed(address: string): boolean {
  return isIPv4(address) && ipv4Octets(address)[0] === 127;
}

/** Spamhaus and others answer 127.255.255.x for "refused / over quota / error": never a listing. */
function isListErrorCode(address: string): boolean {
  return address.startsWith('127.255.255.') && isIPv4(address);
}

// ---------------------------------------------------------------------------------------------
// Query names.

/** RFC 5782 2.1 / 2.4: the reversed octets or nibbles, without the zone; null for a non-IP peer. */
export function reversedName(address: string): string | null {
  const v4 = unmapIPv4(address);
  if (isIPv4(v4)) return v4.split('.').map(Number).reverse().join('.');
  if (!isIPv6(address)) return null;
  const nibbles = ipv6Groups(address).map((g) => g.toString(16).padStart(4, '0')).join('');
  return [...nibbles].reverse().join('.');
}

// ---------------------------------------------------------------------------------------------
// The check.

type Answers = { kind: 'answers'; answers: readonly ResolvedA[]; expiresMs: number };
type Lookup = Answers | { kind: 'failed'; problem: string };

type CompiledList = { zone: string; weight: number; matches: (address: string) => boolean };

/** Throws on a setting that is our configuration's bug (the config loader should refuse it first). */
export function dnsblCheck(opts: DnsblOptions): Check {
  if (opts.lists.length === 0) throw new Error('dnsbl: no lists configured');
  if (!(opts.threshold > 0)) throw new Error('dnsbl: threshold must be above 0 (0 would refuse every client)');
  if (opts.allowThreshold !== undefined && !(opts.allowThreshold < 0)) {
    throw new Error('dnsbl: allow threshold must be below 0 (0 would accept every client that no list names)');
  }
  const lists: CompiledList[] = opts.lists.map((spec) => {
    const zone = spec.zone.toLowerCase().replace(/\.$/, '');
    // Security: the zone is written into the client's reply: a host name only, never CR/LF.
    if (!isDnsName(zone, 2)) {
      throw new Error(`dnsbl: "${spec.zone}" is not a DNS zone name`);
    }
    if (!Number.isFinite(spec.weight)) throw new Error(`dnsbl: ${zone}: weight must be a number`);
    const tests = spec.answers.map((text) => {
      const p = parseAnswerPattern(text);
      if (!p.ok) throw new Error(`dnsbl: ${zone}: ${p.problem}`);
      return p.test;
    });
    const matches = tests.length === 0 ? isDefaultListed : (a: string) => tests.some((t) => t(a));
    return { zone, weight: spec.weight, matches };
  });
  const zones = [...new Set(lists.map((l) => l.zone))];

  // Cached as the Lookup itself, so a hit is returned as it is.
  const cache = new BoundedCache<string, Answers>(opts.maxCacheEntries);
  const inFlight = new Map<string, Promise<Lookup>>();
  const errorLoggedMs = new Map<string, number>();

  const remember = (name: string, answers: readonly ResolvedA[], seconds: number, nowMs: number): Answers => {
    const lookup: Answers = { kind: 'answers', answers, expiresMs: nowMs + seconds * 1000 };
    if (seconds > 0) cache.set(name, lookup, lookup.expiresMs);
    return lookup;
  };

  /** The query names of the last client asked about: its next RCPT costs no string work. */
  let lastNames: { address: string; names: readonly string[] | null } = { address: '', names: null };
  const queryNamesOf = (address: string): readonly string[] | null => {
    if (lastNames.address !== address) {
      const reversed = reversedName(address);
      lastNames = { address, names: reversed === null ? null : zones.map((zone) => `${reversed}.${zone}`) };
    }
    return lastNames.names;
  };

  /** A cached, unexpired answer for one query name, or undefined. */
  const cachedLookup = (name: string): Lookup | undefined => cache.get(name, opts.now());

  /** One query name: from the cache, joined to a lookup under way, or asked now. */
  const lookup = (name: string): Promise<Lookup> => {
    const hit = cachedLookup(name);
    if (hit !== undefined) return Promise.resolve(hit);
    const pending = inFlight.get(name);
    if (pending !== undefined) return pending;
    const started = opts.dns.resolve4(name).then(
      (answers): Lookup => {
        const doneMs = opts.now();
        const seconds = answers.length === 0
          ? opts.negativeCacheSeconds
          : Math.min(MAX_CACHE_SECONDS, Math.max(1, Math.min(...answers.map((a) => a.ttl))));
        return remember(name, answers, seconds, doneMs);
      },
      // A failed lookup is not cached: the next client asks again.
      (err: unknown): Lookup => ({ kind: 'failed', problem: (err as NodeJS.ErrnoException).code ?? String(err) }),
    ).finally(() => inFlight.delete(name));
    inFlight.set(name, started);
    return started;
  };

  const warnListError = (zone: string, address: string): void => {
    const nowMs = opts.now();
    const last = errorLoggedMs.get(zone);
    if (last !== undefined && nowMs - last < ERROR_LOG_INTERVAL_MS) return;
    errorLoggedMs.set(zone, nowMs);
    opts.log?.warn({ check: 'dnsbl', zone, answer: address }, 'DNS list answered with an error code (query refused?); not counted as a listing');
  };

  return {
    name: 'dnsbl',
    stages: [opts.stage],
    timeoutMs: opts.lookupTimeoutMs + TIMEOUT_MARGIN_MS,
    onTimeout: { action: 'continue' },
    memoryScope: 'host',
    // The verdict is about the client, not a recipient: one refusal covers the session.
    key: () => '',
    run: (ctx, signal): PolicyVerdict | Promise<PolicyVerdict> => {
      if (ctx.session.isRelayClient) return { action: 'continue' };
      const address = ctx.session.peer.address;
      const names = queryNamesOf(address);
      if (names === null) return { action: 'continue' };
      // Fast path: every list's answer for this client is cached (the common case for a busy
      // client): answered synchronously, no timer, no promise; and when no list names the client
      // (NXDOMAIN everywhere, the usual answer) the score is 0, which is no opinion (threshold > 0,
      // allowThreshold < 0), with nothing to judge.
      const cached: Lookup[] = [];
      let hasAnyAnswer = false;
      for (const name of names) {
        const hit = cachedLookup(name);
        if (hit === undefined) return lookupAll(names, signal).then((results) => judgeResults(ctx.session.id, address, results));
        if (hit.kind !== 'answers' || hit.answers.length > 0) hasAnyAnswer = true;
        cached.push(hit);
      }
      return hasAnyAnswer ? judgeResults(ctx.session.id, address, cached) : NO_OPINION;
    },
  };

  /** All query names of one client in parallel, bounded by one timer and the pipeline's signal. */
  async function lookupAll(names: readonly string[], signal: AbortSignal): Promise<Lookup[]> {
    let timer: NodeJS.Timeout | undefined;
    let onAbort = (): void => {};
    const budget = new Promise<Lookup>((resolve) => {
      const expire = (): void => resolve({ kind: 'failed', problem: `no answer within ${opts.lookupTimeoutMs} ms` });
      timer = setTimeout(expire, opts.lookupTimeoutMs);
      onAbort = expire;
      if (signal.aborted) expire();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.all(names.map((name) => Promise.race([lookup(name), budget])));
    } finally {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    }
  }

  function judgeResults(sid: string, address: string, results: readonly Lookup[]): PolicyVerdict {
    const byZone = new Map(zones.map((zone, i) => [zone, results[i]]));

    const nowMs = opts.now();
    let score = 0;
    let minTtlSeconds = Infinity;
    const hits: string[] = [];
    const blockZones: string[] = [];
    for (const [zone, result] of byZone) {
      if (result.kind === 'failed') {
        opts.log?.warn({ sid, check: 'dnsbl', zone, problem: result.problem }, 'DNS list lookup failed; counted as not listed');
        hits.push(`${zone} failed (${result.problem})`);
        continue;
      }
      for (const a of result.answers) if (isListErrorCode(a.address)) warnListError(zone, a.address);
    }
    for (const list of lists) {
      const result = byZone.get(list.zone)!;
      if (result.kind === 'failed') continue;
      const matching = result.answers.filter((a) => !isListErrorCode(a.address) && list.matches(a.address));
      if (matching.length === 0) continue;
      score += list.weight;
      hits.push(`${list.zone}=${matching.map((a) => a.address).join('/')} (weight ${list.weight})`);
      if (list.weight > 0 && !blockZones.includes(list.zone)) blockZones.push(list.zone);
      // A cached answer is only valid for what is left of its TTL.
      minTtlSeconds = Math.min(minTtlSeconds, Math.ceil((result.expiresMs - nowMs) / 1000));
    }
    const detail = hits.length === 0 ? 'no list answered' : hits.join(', ');
    if (score >= opts.threshold) {
      return {
        // A 421 greeting means the connection closes: the pipeline must say so.
        action: opts.action === 'tempfail' && opts.stage === 'connect' ? 'disconnect' : opts.action,
        // The zones are validated DNS names (no CR/LF), the address a peer address.
        reply: REPLY.dnsblListed(opts.action, opts.stage, address, blockZones),
        check: 'dnsbl',
        reason: `score ${score} >= ${opts.threshold}: ${detail}`,
        key: '',
        ttlSeconds: Math.max(1, Math.min(MAX_CACHE_SECONDS, minTtlSeconds)),
      };
    }
    if (opts.allowThreshold !== undefined && score <= opts.allowThreshold) return { action: 'accept' };
    return { action: 'continue' };
  }
}
