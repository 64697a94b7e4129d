// MX resolution for "mx" routes (RFC 5321 5.1): a recipient domain -> the ordered list of
// {host, address, port 25} to try, or a failed/deferred result the queue records. Uses only the
// repo's DnsClient (configured servers, bounded tries); randomness is injected. Never connects
// and never retries: the SMTP client walks the candidates, the queue schedules.
// RFC 5321 5.1 (MX order, implicit MX, never to ourselves), RFC 7505 (null MX), RFC 3463 codes.
//
// Hand-written rather than mx-connect: that package resolves and connects in one step (and adds
// MTA-STS/DANE lookups we do not configure yet), while the queue needs the answer as data first,
// to fail a null-MX or looping domain for every recipient at once without any connection, and
// to tell NXDOMAIN (fail) from SERVFAIL (defer) — which is most of what this file is.

import { NXDOMAIN, type DnsClient, type ResolvedMx } from '../dns/resolver.ts';
import { canonicalIp, ipFamily } from '../net/ip.ts';
import { DELIVERY_REPLY } from '../protocol/replies.ts';
import type { DeliveryReply } from './types.ts';

/** RFC 5321 5.1 "MUST" port 25 for MX delivery. */
export const SMTP_PORT = 25;
/** MX hosts considered per domain (Postfix: smtp_mx_address_limit is 5 addresses). */
export const MAX_MX_HOSTS = 10;
/** Addresses tried per domain, across its hosts. */
export const MAX_CANDIDATES = 20;

export type MxCandidate = {
  /** The MX host name (for the implicit MX: the domain itself; for a literal: the address). */
  host: string;
  address: string;
  port: number;
  preference: number;
};

export type MxResolution =
  | { kind: 'candidates'; candidates: MxCandidate[]; isImplicit: boolean }
  | { kind: 'failed' | 'deferred'; reply: DeliveryReply };

/** Who we are: an MX host with one of these names or addresses is this server (RFC 5321 5.1). */
export type SelfIdentity = {
  /** smtp.hostname and any other name this server answers MX for; compared case-insensitively. */
  hostnames: readonly string[];
  /** Addresses this server accepts mail on at port 25 (see selfAddresses). */
  addresses: readonly string[];
};

export type MxOptions = {
  dns: DnsClient;
  self: SelfIdentity;
  /** [0, 1): picks among MX hosts of equal preference. Injected for tests. */
  random?: () => number;
  /** Addresses of one host: IPv6 first (RFC 6724 default policy) or IPv4 first. */
  preferIPv6?: boolean;
};

/** The results mx.ts gives, from the one catalogue (protocol/replies.ts). */
export const MX_REPLIES = {
  nullMx: DELIVERY_REPLY.nullMx,
  noSuchDomain: DELIVERY_REPLY.noSuchDomain,
  noAddress: DELIVERY_REPLY.noAddress,
  noMxAddress: DELIVERY_REPLY.noMxAddress,
  loop: DELIVERY_REPLY.mxLoop,
  dnsTemporary: DELIVERY_REPLY.dnsTemporary,
};

/** Our addresses at port 25 from the listen list: a wildcard listener is every interface address. */
export function selfAddresses(
  listen: readonly { host: string; port: number }[],
  interfaces: readonly string[],
  port = SMTP_PORT,
): string[] {
  const out = new Set<string>();
  for (const l of listen) {
    if (l.port !== port) continue;
    if (l.host === '0.0.0.0') {
      for (const a of interfaces) if (ipFamily(a) === 4) out.add(a);
    } else if (l.host === '::') {
      // A dual-stack wildcard takes IPv4 too.
      for (const a of interfaces) out.add(canonicalIp(a));
    } else if (ipFamily(l.host) !== 0) out.add(canonicalIp(l.host));
  }
  return [...out];
}

/** An address literal domain ("[192.0.2.1]", "[IPv6:2001:db8::1]") -> its address, else null. */
function literalAddress(domain: string): string | null {
  if (!domain.startsWith('[') || !domain.endsWith(']')) return null;
  const inner = domain.slice(1, -1);
  const address = /^ipv6:/i.test(inner) ? inner.slice(5) : inner;
  return ipFamily(address) !== 0 ? canonicalIp(address) : null;
}

type HostAddresses = { kind: 'ok'; addresses: string[] } | { kind: 'none' } | { kind: 'temporary' };

async function hostAddresses(dns: DnsClient, host: string, preferIPv6: boolean): Promise<HostAddresses> {
  const [v4, v6] = await Promise.allSettled([dns.resolve4(host), dns.resolve6(host)]);
  const four = v4.status === 'fulfilled' ? v4.value.map((r) => r.address) : [];
  const six = v6.status === 'fulfilled' ? v6.value.map((r) => canonicalIp(r.address)) : [];
  const addresses = preferIPv6 ? [...six, ...four] : [...four, ...six];
  if (addresses.length > 0) return { kind: 'ok', addresses };
  return v4.status === 'rejected' || v6.status === 'rejected' ? { kind: 'temporary' } : { kind: 'none' };
}

/** RFC 5321 5.1: sorted by preference, equal preferences in random order. */
function orderMx(records: readonly ResolvedMx[], random: () => number): ResolvedMx[] {
  const keyed = records.map((r) => ({ r, k: random() }));
  keyed.sort((a, b) => a.r.priority - b.r.priority || a.k - b.k);
  return keyed.map((x) => x.r);
}

export async function resolveMx(domain: string, opts: MxOptions): Promise<MxResolution> {
  const random = opts.random ?? Math.random;
  const preferIPv6 = opts.preferIPv6 ?? true;
  const selfNames = new Set(opts.self.hostnames.map((h) => h.toLowerCase()));
  const selfAddrs = new Set(opts.self.addresses.map(canonicalIp));
  const isSelf = (host: string, address: string): boolean => selfNames.has(host.toLowerCase()) || selfAddrs.has(address);

  // RFC 5321 5.1: an address literal is delivered to that address, no MX.
  const literal = literalAddress(domain);
  if (literal !== null) {
    if (selfAddrs.has(literal)) return { kind: 'failed', reply: MX_REPLIES.loop(domain) };
    return { kind: 'candidates', candidates: [{ host: literal, address: literal, port: SMTP_PORT, preference: 0 }], isImplicit: true };
  }

  let records: ResolvedMx[] | typeof NXDOMAIN;
  try {
    records = await opts.dns.resolveMx(domain);
  } catch {
    // Not an answer (SERVFAIL, REFUSED, timeout): the domain may well exist; try again later.
    return { kind: 'deferred', reply: MX_REPLIES.dnsTemporary(domain, 'MX') };
  }
  if (records === NXDOMAIN) return { kind: 'failed', reply: MX_REPLIES.noSuchDomain(domain) };

  // RFC 7505 3: a null MX is the single record "0 ."; a root exchange beside real hosts is not a host.
  if (records.length === 1 && records[0].exchange === '' && records[0].priority === 0) {
    return { kind: 'failed', reply: MX_REPLIES.nullMx(domain) };
  }
  const hosts = records.filter((r) => r.exchange !== '');

  if (records.length === 0) {
    // RFC 5321 5.1: no MX records: the domain itself is the implicit MX, preference 0.
    const own = await hostAddresses(opts.dns, domain, preferIPv6);
    if (own.kind === 'temporary') return { kind: 'deferred', reply: MX_REPLIES.dnsTemporary(domain, 'A/AAAA') };
    if (own.kind === 'none') return { kind: 'failed', reply: MX_REPLIES.noAddress(domain) };
    if (own.addresses.some((a) => isSelf(domain, a))) return { kind: 'failed', reply: MX_REPLIES.loop(domain) };
    const candidates = own.addresses.slice(0, MAX_CANDIDATES).map((address) => ({ host: domain, address, port: SMTP_PORT, preference: 0 }));
    return { kind: 'candidates', candidates, isImplicit: true };
  }
  if (hosts.length === 0) return { kind: 'failed', reply: MX_REPLIES.noMxAddress(domain) };

  const ordered = orderMx(hosts, random).slice(0, MAX_MX_HOSTS);
  const resolved = await Promise.all(ordered.map((r) => hostAddresses(opts.dns, r.exchange, preferIPv6)));

  // RFC 5321 5.1: if we are one of the MX hosts, only hosts more preferred than us may be used.
  let ourPreference = Infinity;
  ordered.forEach((r, i) => {
    const res = resolved[i];
    const isUs = selfNames.has(r.exchange.toLowerCase()) || (res.kind === 'ok' && res.addresses.some((a) => selfAddrs.has(a)));
    if (isUs) ourPreference = Math.min(ourPreference, r.priority);
  });

  const candidates: MxCandidate[] = [];
  let isTemporaryFailure = false;
  ordered.forEach((r, i) => {
    if (r.priority >= ourPreference) return;
    const res = resolved[i];
    if (res.kind === 'temporary') isTemporaryFailure = true;
    if (res.kind !== 'ok') return;
    for (const address of res.addresses) {
      // A host of better preference than ours that still lands on one of our addresses is us too.
      if (selfAddrs.has(address)) continue;
      if (candidates.length < MAX_CANDIDATES) candidates.push({ host: r.exchange.toLowerCase(), address, port: SMTP_PORT, preference: r.priority });
    }
  });
  if (candidates.length > 0) return { kind: 'candidates', candidates, isImplicit: false };
  if (ourPreference !== Infinity && !isTemporaryFailure) return { kind: 'failed', reply: MX_REPLIES.loop(domain) };
  if (isTemporaryFailure) return { kind: 'deferred', reply: MX_REPLIES.dnsTemporary(domain, 'MX host addresses') };
  return { kind: 'failed', reply: MX_REPLIES.noMxAddress(domain) };
}
