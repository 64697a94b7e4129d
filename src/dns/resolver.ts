// The one DNS resolver every policy check (DNS lists, SPF) and delivery (MX, A, AAAA) uses: node:dns/promises' Resolver with
// the servers from `dns.servers` (empty = the system's), a per-query timeout and a bounded number
// of tries, so a dead DNS server costs a known time instead of node's default retry schedule.
// Never calls dns.lookup() (getaddrinfo), which would ignore the configured servers.

import { Resolver } from 'node:dns/promises';

export type DnsOptions = {
  /** "ip" or "ip:port" ("[v6]:port"); empty = the system resolver's servers. */
  servers: readonly string[];
  /** Per try, in milliseconds. */
  timeoutMs: number;
  tries: number;
};

export type ResolvedA = { address: string; ttl: number };

/** An MX record; `exchange` is '' for the root (a null MX, RFC 7505). */
export type ResolvedMx = { exchange: string; priority: number };

/** NXDOMAIN: the name does not exist, which RFC 5321 5.1 treats apart from "no MX records". */
export const NXDOMAIN = 'nxdomain';

/** What checks need from DNS. The `resolve` signature is the one mailauth takes. */
export type DnsClient = {
  /** What it was built from: a worker thread builds its own client from these (SPF). */
  readonly options: DnsOptions;
  resolve(name: string, rrtype: string): Promise<unknown>;
  /** A records with their TTL (seconds); [] for NXDOMAIN and no-data answers. */
  resolve4(name: string): Promise<ResolvedA[]>;
  /** AAAA records with their TTL; [] for NXDOMAIN and no-data answers. */
  resolve6(name: string): Promise<ResolvedA[]>;
  /** MX records ([] when the name exists without any), or NXDOMAIN. Other failures reject
   *  (SERVFAIL, timeout): the caller defers. */
  resolveMx(name: string): Promise<ResolvedMx[] | typeof NXDOMAIN>;
};

/** DNS error codes that mean "this name has no such record", not "the lookup failed". */
export const NO_RECORD_CODES: ReadonlySet<string> = new Set(['ENOTFOUND', 'ENODATA']);

export function createDnsClient(opts: DnsOptions): DnsClient {
  const resolver = new Resolver({ timeout: opts.timeoutMs, tries: opts.tries });
  if (opts.servers.length > 0) resolver.setServers([...opts.servers]);
  return {
    options: { servers: [...opts.servers], timeoutMs: opts.timeoutMs, tries: opts.tries },
    resolve: (name, rrtype) => resolver.resolve(name, rrtype),
    async resolve4(name) {
      try {
        return await resolver.resolve4(name, { ttl: true });
      } catch (err) {
        if (NO_RECORD_CODES.has((err as NodeJS.ErrnoException).code ?? '')) return [];
        throw err;
      }
    },
    async resolve6(name) {
      try {
        return await resolver.resolve6(name, { ttl: true });
      } catch (err) {
        if (NO_RECORD_CODES.has((err as NodeJS.ErrnoException).code ?? '')) return [];
        throw err;
      }
    },
    async resolveMx(name) {
      try {
        return (await resolver.resolveMx(name)).map((r) => ({ exchange: r.exchange, priority: r.priority }));
      } catch (err) {
        // c-ares: ENOTFOUND is NXDOMAIN, ENODATA an answer without records of the type.
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOTFOUND') return NXDOMAIN;
        if (code === 'ENODATA') return [];
        throw err;
      }
    },
  };
}
