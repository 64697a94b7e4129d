// Admission: the first step of every connection, before any session state exists. Joins the
// access lists (defense/access.ts), the concurrency counts per client address, per client network
// and in total (defense/counter.ts) and the per-address connection rate (defense/rate.ts) into one
// decision: allow (with the release to call when the connection ends), refuse with 421 4.7.0
// (over a limit), or refuse with 554 5.7.1 (blocked). The limit that fired goes to the log line
// and the metric (defense/events.ts), never into the reply. Cheap: no DNS, and no store unless the
// rate is shared by the cluster (below).
//
// Across workers (the kernel spreads one client's connections over them) the limits are the
// node's: each of W workers admits on its own up to floor(L / 2W) of each limit L (no IPC, the
// common case), and asks the primary's pool (admission-share.ts) for a connection past that; the
// pool holds the rest, L - W x floor(L / 2W). A connection is counted wholly locally or wholly in
// the pool, so no key ever passes L. A pool that does not answer in time fails open (logged).
//
// Across nodes (limits.connection_rate_shared): a connection the node admitted is counted once
// more, in the cluster's store (defense/shared-rate.ts); over the cluster's rate it is refused as
// the node's own rate refuses (421 4.7.0, rule connection_rate_per_ip) and its node grant given
// back. A store that fails or is late fails open too, with one paced warning.

import type { Logger } from 'pino';
import type { AccessLists } from '../defense/access.ts';
import { ConcurrencyCounter } from '../defense/counter.ts';
import { defenseFired, type DefenseMetrics, type DefenseRule } from '../defense/events.ts';
import { rateText, SlidingRate, type Rate } from '../defense/rate.ts';
import { SHARED_RATE_WARN_INTERVAL_MS, WarnPacer, type SharedRate } from '../defense/shared-rate.ts';
import { clientNetwork, type NetworkPrefixes } from '../policy/network.ts';
import { REPLY, type Reply } from '../protocol/replies.ts';

/** The two replies admission sends, from the catalogue (protocol/replies.ts). */
export const ADMISSION_REPLY = {
  overLimit: REPLY.tooManyConnections,
  blocked: REPLY.connectionBlocked,
} as const;

export type AdmissionLimits = {
  maxConnections: number;
  maxConnectionsPerIp: number;
  maxConnectionsPerNetwork: number;
  connectionRatePerIp: Rate;
};

export type AdmissionDecision =
  | { kind: 'allow'; release: () => void; isAllowListed?: true }
  | { kind: 'refuse'; rule: DefenseRule; reply: Reply };

/** The limit rules admission counts, in the order they are judged. */
export type LimitRule = 'max_connections' | 'max_connections_per_ip' | 'max_connections_per_network' | 'connection_rate_per_ip';

/** The primary's pool, as a worker sees it: a grant (released when the connection ends), a refusal, or no answer. */
export interface AdmissionPool {
  request(address: string): Promise<{ kind: 'granted'; release: () => void } | { kind: 'refused'; rule: LimitRule } | { kind: 'unavailable'; reason: string }>;
}

const NOTHING = (): void => undefined;

/** Counts against a set of limits: concurrency per address, per network, in total, and the rate. Pure. */
export class AdmissionCounts {
  readonly #limits: AdmissionLimits;
  readonly #prefixes: NetworkPrefixes;
  readonly #perIp = new ConcurrencyCounter();
  readonly #perNetwork = new ConcurrencyCounter();
  readonly #rate: SlidingRate;

  constructor(limits: AdmissionLimits, prefixes: NetworkPrefixes) {
    this.#limits = limits;
    this.#prefixes = prefixes;
    this.#rate = new SlidingRate(limits.connectionRatePerIp);
  }

  get liveCount(): number {
    return this.#perIp.total;
  }

  /**
   * Takes one connection from `address` if every limit has room: its release, or the rule that
   * had none (with the measured value). `countRefused`: a refused attempt still counts toward the
   * rate (the last word on a connection does; a worker's local try that moves on to the pool does not).
   */
  take(address: string, nowMs: number, countRefused: boolean): { release: () => void } | { rule: LimitRule; value: number } {
    const limits = this.#limits;
    const total = this.#perIp.total;
    if (total >= limits.maxConnections) return this.#refused('max_connections', total + 1, address, nowMs, countRefused);
    const ip = this.#perIp.get(address);
    if (ip >= limits.maxConnectionsPerIp) return this.#refused('max_connections_per_ip', ip + 1, address, nowMs, countRefused);
    const network = clientNetwork(address, this.#prefixes);
    const net = this.#perNetwork.get(network);
    if (net >= limits.maxConnectionsPerNetwork) return this.#refused('max_connections_per_network', net + 1, address, nowMs, countRefused);
    const estimate = this.#rate.estimate(address, nowMs);
    if (estimate + 1 > limits.connectionRatePerIp.count) return this.#refused('connection_rate_per_ip', Math.floor(estimate) + 1, address, nowMs, countRefused);
    this.#rate.hit(address, nowMs);
    this.#perIp.add(address);
    this.#perNetwork.add(network);
    let isReleased = false;
    return {
      release: () => {
        if (isReleased) return;
        isReleased = true;
        this.#perIp.remove(address);
        this.#perNetwork.remove(network);
      },
    };
  }

  #refused(rule: LimitRule, value: number, address: string, nowMs: number, countRefused: boolean): { rule: LimitRule; value: number } {
    // Security: a client hammering past a limit keeps its rate count growing, so it stays out.
    if (countRefused) this.#rate.hit(address, nowMs);
    return { rule, value };
  }
}

/** One worker's share of limits L over W workers: floor(L / 2W) each; the pool holds what is left. */
export function splitLimits(limits: AdmissionLimits, workers: number): { local: AdmissionLimits; pool: AdmissionLimits } {
  const share = (n: number): number => Math.floor(n / (2 * workers));
  const local: AdmissionLimits = {
    maxConnections: share(limits.maxConnections),
    maxConnectionsPerIp: share(limits.maxConnectionsPerIp),
    maxConnectionsPerNetwork: share(limits.maxConnectionsPerNetwork),
    connectionRatePerIp: { count: share(limits.connectionRatePerIp.count), windowSeconds: limits.connectionRatePerIp.windowSeconds },
  };
  const rest = (n: number, l: number): number => n - workers * l;
  return {
    local,
    pool: {
      maxConnections: rest(limits.maxConnections, local.maxConnections),
      maxConnectionsPerIp: rest(limits.maxConnectionsPerIp, local.maxConnectionsPerIp),
      maxConnectionsPerNetwork: rest(limits.maxConnectionsPerNetwork, local.maxConnectionsPerNetwork),
      connectionRatePerIp: { count: rest(limits.connectionRatePerIp.count, local.connectionRatePerIp.count), windowSeconds: limits.connectionRatePerIp.windowSeconds },
    },
  };
}

export class Admission {
  readonly #access: AccessLists;
  readonly #limits: AdmissionLimits;
  readonly #log: Logger;
  readonly #metrics: DefenseMetrics | null;
  readonly #local: AdmissionCounts;
  readonly #pool: AdmissionPool | null;
  readonly #sharedRate: SharedRate | null;
  readonly #sharedWarnings = new WarnPacer(SHARED_RATE_WARN_INTERVAL_MS);

  /** `shared`: this is one of `workers` processes, and `pool` holds the node's remainder. */
  constructor(opts: {
    access: AccessLists;
    limits: AdmissionLimits;
    prefixes: NetworkPrefixes;
    log: Logger;
    metrics?: DefenseMetrics | null;
    shared?: { workers: number; pool: AdmissionPool } | null;
    /** The cluster's count of the per-address rate (limits.connection_rate_shared); absent: the node's only. */
    sharedRate?: SharedRate | null;
  }) {
    this.#access = opts.access;
    this.#limits = opts.limits;
    this.#log = opts.log;
    this.#metrics = opts.metrics ?? null;
    const shared = opts.shared ?? null;
    this.#pool = shared?.pool ?? null;
    this.#sharedRate = opts.sharedRate ?? null;
    this.#local = new AdmissionCounts(shared === null ? opts.limits : splitLimits(opts.limits, shared.workers).local, opts.prefixes);
  }

  /** Connections this process admitted on its own and not yet released (allow-listed ones are not counted). */
  get liveCount(): number {
    return this.#local.liveCount;
  }

  /** Judges one new connection from `address` (the real client's, from PROXY when trusted). */
  admit(address: string, nowMs: number): AdmissionDecision | Promise<AdmissionDecision> {
    const access = this.#access;
    // Security: the allow list is checked first, so an operator's own networks are never refused.
    if (access.isAllowed(address)) return { kind: 'allow', release: NOTHING, isAllowListed: true };
    if (access.isBlocked(address)) return this.#refuse('access_block', address, ADMISSION_REPLY.blocked, 'access.block', null);
    const pool = this.#pool;
    const local = this.#local.take(address, nowMs, pool === null);
    if ('release' in local) return this.#clusterRate(address, nowMs, local.release);
    if (pool === null) return this.#refuse(local.rule, address, ADMISSION_REPLY.overLimit, this.#limitText(local.rule), local.value);
    return pool.request(address).then((answer) => {
      if (answer.kind === 'granted') return this.#clusterRate(address, nowMs, answer.release);
      if (answer.kind === 'refused') return this.#refuse(answer.rule, address, ADMISSION_REPLY.overLimit, this.#limitText(answer.rule), null);
      // Fail open: a primary too busy to answer must not shut every client out.
      this.#log.warn({ client: address, reason: answer.reason }, 'admission: the primary did not answer; admitted without the node-wide count');
      return this.#clusterRate(address, nowMs, NOTHING);
    });
  }

  /** A connection the node admitted, judged against the cluster's rate when it is shared. */
  #clusterRate(address: string, nowMs: number, release: () => void): AdmissionDecision | Promise<AdmissionDecision> {
    const shared = this.#sharedRate;
    if (shared === null) return { kind: 'allow', release };
    return shared.count(address, nowMs).then((answer): AdmissionDecision => {
      if (answer.kind === 'within') return { kind: 'allow', release };
      if (answer.kind === 'over') {
        release();
        return this.#refuse('connection_rate_per_ip', address, ADMISSION_REPLY.overLimit, this.#limitText('connection_rate_per_ip'), answer.value);
      }
      // Fail open, as with the primary: a dead Redis must not shut every client out (nor flood the log).
      const due = this.#sharedWarnings.next(nowMs);
      if (due.isDue) {
        this.#log.warn({ client: address, reason: answer.reason, held: due.held }, 'admission: the shared rate did not answer; admitted on the node\'s own count');
      }
      return { kind: 'allow', release };
    });
  }

  #limitText(rule: LimitRule): string | number {
    const l = this.#limits;
    switch (rule) {
      case 'max_connections':
        return l.maxConnections;
      case 'max_connections_per_ip':
        return l.maxConnectionsPerIp;
      case 'max_connections_per_network':
        return l.maxConnectionsPerNetwork;
      case 'connection_rate_per_ip':
        return rateText(l.connectionRatePerIp);
    }
  }

  #refuse(rule: DefenseRule, client: string, r: Reply, limit: string | number, value: number | null): AdmissionDecision {
    defenseFired(this.#log, this.#metrics, { rule, sessionId: null, client, limit, value, reply: `${r.code} ${r.enhanced}` });
    return { kind: 'refuse', rule, reply: r };
  }
}
