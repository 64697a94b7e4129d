// The client network a remembered verdict (or a greylist triplet) is keyed by: by default IPv4
// /24 and IPv6 /64, the grouping postgrey uses, because senders rotate addresses within their
// network; `verdicts.ipv4_prefix` / `verdicts.ipv6_prefix` change it, and checks whose verdict is
// about one address (DNS lists) use the host prefixes (/32, /128). Pure string work.

import { isIPv4, isIPv6 } from 'node:net';
import { formatIPv6, ipv6Groups } from '../net/ip.ts';

export type NetworkPrefixes = { readonly ipv4: number; readonly ipv6: number };

export const DEFAULT_PREFIXES: NetworkPrefixes = { ipv4: 24, ipv6: 64 };
export const HOST_PREFIXES: NetworkPrefixes = { ipv4: 32, ipv6: 128 };

/** "192.0.2.77" -> "192.0.2.0/24"; "2001:db8:1:2:3::4" -> "2001:db8:1:2::/64". */
export function clientNetwork(address: string, prefixes: NetworkPrefixes = DEFAULT_PREFIXES): string {
  if (isIPv4(address)) {
    // The two prefixes used on every message, without arithmetic.
    if (prefixes.ipv4 === 32) return `${address}/32`;
    if (prefixes.ipv4 === 24) return `${address.slice(0, address.lastIndexOf('.'))}.0/24`;
    const n = address.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
    const size = 2 ** (32 - prefixes.ipv4);
    const base = n - (n % size);
    const octets = [base >>> 24, (base >>> 16) & 255, (base >>> 8) & 255, base & 255];
    return `${octets.join('.')}/${prefixes.ipv4}`;
  }
  if (isIPv6(address)) {
    let value = ipv6Groups(address).reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
    const hostBits = BigInt(128 - prefixes.ipv6);
    value = (value >> hostBits) << hostBits;
    const out: number[] = [];
    for (let i = 7; i >= 0; i--) out.push(Number((value >> BigInt(i * 16)) & 0xffffn));
    return `${formatIPv6(out)}/${prefixes.ipv6}`;
  }
  return address;
}
