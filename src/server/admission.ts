// Admission: the first step of every connection, before any session state exists. Joins the
// access lists (defense/access.ts), the concurrency counts per client address, per client network
// and in total (defense/counter.ts) and the per-address connection rate (defense/rate.ts) into one
// decision: allow (with the release to call when the connection ends), refuse with 421 4.7.0
// (over a limit), or refuse with 554 5.7.1 (blocked). The limit that fired goes to the log line
// and the metric (defense/events.ts), never into the reply. Cheap: no DNS, no store, no timer.
// Counts are this process's (each worker counts its own connections; docs/defense.md says so).

import type { Logger } from 'pino';
import type { AccessLists } from '../defense/access.ts';
import { ConcurrencyCounter } from '../defense/counter.ts';
import { defenseFired, type DefenseMetrics, type DefenseRule } from '../defense/events.ts';
import { rateText, SlidingRate, type Rate } from '../defense/rate.ts';
import { clientNetwork, type NetworkPrefixes } from '../policy/network.ts';
import { reply, type Reply } from '../protocol/replies.ts';

export const ADMISSION_REPLY = {
  // RFC 3463 4.7.0: a security or policy status; the client may try later.
  overLimit: reply(421, '4.7.0', 'Too many connections, try again later'),
  // RFC 5321 3.1: 554 in place of the greeting; RFC 3463 5.7.1: delivery not authorised.
  blocked: reply(554, '5.7.1', 'Connection refused by policy'),
} as const;

export type AdmissionLimits = {
  maxConnections: number;
  maxConnectionsPerIp: number;
  maxConnectionsPerNetwork: number;
  connectionRatePerIp: Rate;
};

export type AdmissionDecision =
  | { kind: 'allow'; release: () => void }
  | { kind: 'refuse'; rule: DefenseRule; reply: Reply };

const NOTHING = (): void => undefined;

export class Admission {
  readonly #access: AccessLists;
  readonly #limits: AdmissionLimits;
  readonly #prefixes: NetworkPrefixes;
  readonly #log: Logger;
  readonly #metrics: DefenseMetrics | null;
  readonly #perIp = new ConcurrencyCounter();
  readonly #perNetwork = new ConcurrencyCounter();
  readonly #rate: SlidingRate;

  constructor(opts: { access: AccessLists; limits: AdmissionLimits; prefixes: NetworkPrefixes; log: Logger; metrics?: DefenseMetrics | null }) {
    this.#access = opts.access;
    this.#limits = opts.limits;
    this.#prefixes = opts.prefixes;
    this.#log = opts.log;
    this.#metrics = opts.metrics ?? null;
    this.#rate = new SlidingRate(opts.limits.connectionRatePerIp);
  }

  /** Connections admitted and not yet released (allow-listed ones are not counted). */
  get liveCount(): number {
    return this.#perIp.total;
  }

  /** Judges one new connection from `address` (the real client's, from PROXY when trusted). */
  admit(address: string, nowMs: number): AdmissionDecision {
    const access = this.#access;
    // Security: the allow list is checked first, so an operator's own networks are never refused.
    if (access.isAllowed(address)) return { kind: 'allow', release: NOTHING };
    if (access.isBlocked(address)) return this.#refuse('access_block', address, ADMISSION_REPLY.blocked, 'access.block', null);
    const limits = this.#limits;
    const network = clientNetwork(address, this.#prefixes);
    if (this.#perIp.total >= limits.maxConnections) return this.#refuse('max_connections', address, ADMISSION_REPLY.overLimit, limits.maxConnections, this.#perIp.total + 1);
    const ip = this.#perIp.get(address);
    if (ip >= limits.maxConnectionsPerIp) return this.#refuse('max_connections_per_ip', address, ADMISSION_REPLY.overLimit, limits.maxConnectionsPerIp, ip + 1);
    const net = this.#perNetwork.get(network);
    if (net >= limits.maxConnectionsPerNetwork) return this.#refuse('max_connections_per_network', address, ADMISSION_REPLY.overLimit, limits.maxConnectionsPerNetwork, net + 1);
    const rate = this.#rate.hit(address, nowMs);
    if (!rate.isWithin) return this.#refuse('connection_rate_per_ip', address, ADMISSION_REPLY.overLimit, rateText(limits.connectionRatePerIp), rate.estimate);
    this.#perIp.add(address);
    this.#perNetwork.add(network);
    let isReleased = false;
    return {
      kind: 'allow',
      release: () => {
        if (isReleased) return;
        isReleased = true;
        this.#perIp.remove(address);
        this.#perNetwork.remove(network);
      },
    };
  }

  #refuse(rule: DefenseRule, client: string, r: Reply, limit: string | number, value: number | null): AdmissionDecision {
    defenseFired(this.#log, this.#metrics, { rule, sessionId: null, client, limit, value, reply: `${r.code} ${r.enhanced}` });
    return { kind: 'refuse', rule, reply: r };
  }
}
