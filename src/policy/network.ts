// The client network a remembered verdict (or a greylist triplet) is keyed by: by default IPv4
// /24 and IPv6 /64, the grouping postgrey uses, because senders rotate addresses within their
// network; `verdicts.ipv4_prefix` / `verdicts.ipv6_prefix` change it, and checks whose verdict is
// about one address (DNS lists) use the host prefixes (/32, /128). The arithmetic is net/cidr.ts.

import { networkOf } from '../net/cidr.ts';

export type NetworkPrefixes = { readonly ipv4: number; readonly ipv6: number };

export const DEFAULT_PREFIXES: NetworkPrefixes = { ipv4: 24, ipv6: 64 };
export const HOST_PREFIXES: NetworkPrefixes = { ipv4: 32, ipv6: 128 };

/** "192.0.2.77" -> "192.0.2.0/24"; "2001:db8:1:2:3::4" -> "2001:db8:1:2::/64". */
export function clientNetwork(address: string, prefixes: NetworkPrefixes = DEFAULT_PREFIXES): string {
  return networkOf(address, prefixes);
}
