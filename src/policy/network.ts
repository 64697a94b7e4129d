// The client network a remembered verdict (or a greylist triplet) is keyed by: by default IPv4
// /24 and IPv6 /64, the grouping postgrey uses, because senders rotate addresses within their
// network; `verdicts.ipv4_prefix` / `verdicts.ipv6_prefix` change it, and checks whose verdict is
// about one address (DNS lists) use the host prefixes (/32, /128). Pure string work.

import { isIPv4, isIPv6 } from 'node:net';

export type NetworkPrefixes = { readonly ipv4: number; readonly ipv6: number };

export const DEFAULT_PREFIXES: NetworkPrefixes = { ipv4: 24, ipv6: 64 };
export const HOST_PREFIXES: NetworkPrefixes = { ipv4: 32, ipv6: 128 };

/** "192.0.2.77" -> "192.0.2.0/24"; "2001:db8:1:2:3::4" -> "2001:db8:1:2::/64". */
export function clientNetwork(address: string, prefixes: NetworkPrefixes = DEFAULT_PREFIXES): string {
  if (isIPv4(address)) {
    const n = address.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
    const size = 2 ** (32 - prefixes.ipv4);
    const base = n - (n % size);
    const octets = [base >>> 24, (base >>> 16) & 255, (base >>> 8) & 255, base & 255];
    return `${octets.join('.')}/${prefixes.ipv4}`;
  }
  if (isIPv6(address)) {
    const groups = expandIPv6(address.toLowerCase());
    let value = groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
    const hostBits = BigInt(128 - prefixes.ipv6);
    value = (value >> hostBits) << hostBits;
    const out: string[] = [];
    for (let i = 7; i >= 0; i--) out.push(((value >> BigInt(i * 16)) & 0xffffn).toString(16));
    return `${compressIPv6(out)}/${prefixes.ipv6}`;
  }
  return address;
}

/** Eight 16-bit groups, with "::" and a trailing dotted IPv4 part expanded. */
function expandIPv6(address: string): number[] {
  let text = address;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4 !== null) {
    const [a, b, c, d] = v4.slice(1).map(Number);
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => parseInt(g, 16));
}

/** RFC 5952 4.2: the longest run (of two or more) of zero groups becomes "::". */
function compressIPv6(groups: string[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  if (bestStart < 0) return groups.join(':');
  return `${groups.slice(0, bestStart).join(':')}::${groups.slice(bestStart + bestLen).join(':')}`;
}
