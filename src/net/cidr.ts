// CIDR networks, the one place they are parsed, masked and matched: relay.networks in the
// configuration, the client network a remembered verdict or a greylist triplet is keyed by, and
// the relay decision for a peer. Pure computation (node:net's BlockList is an in-memory matcher,
// no I/O); never resolves names. RFC 4632 3.1 (prefix notation), RFC 4291 2.3 (IPv6 prefixes).

import { BlockList } from 'node:net';
import { formatIPv6, ipFamily, ipv4Octets, ipv6Groups, isIPv4, isIPv6, unmapIPv4, withoutZone } from './ip.ts';

export type Cidr = { readonly family: 4 | 6; readonly address: string; readonly prefix: number };

/** Why a text is not "address/prefix" (or a bare address, which means the one host). */
export type CidrProblem =
  | { kind: 'not-an-address' }
  | { kind: 'bad-prefix'; prefixText: string; maxPrefix: number }
  | { kind: 'host-bits'; network: string; prefix: number };

export function maxPrefixOf(family: 4 | 6): number {
  return family === 4 ? 32 : 128;
}

/** "192.0.2.0/24" -> the network; a bare address is /32 or /128; host bits must be clear. */
export function parseCidr(text: string): Cidr | CidrProblem {
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const family = ipFamily(address);
  if (family === 0) return { kind: 'not-an-address' };
  const maxPrefix = maxPrefixOf(family);
  const prefixText = slash < 0 ? String(maxPrefix) : text.slice(slash + 1);
  const prefix = /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= maxPrefix)) return { kind: 'bad-prefix', prefixText, maxPrefix };
  const network = networkBase(address, prefix);
  // "10.1.2.3/8" is usually a typo for one host or for the network: the caller says which.
  if (network !== networkBase(address, maxPrefix)) return { kind: 'host-bits', network, prefix };
  return { family, address, prefix };
}

/** Clears the host bits below `prefix` in words of `bits` bits each. */
function maskWords(words: readonly number[], bits: number, prefix: number): number[] {
  return words.map((word, i) => {
    const keep = Math.min(Math.max(prefix - i * bits, 0), bits);
    const mask = keep === 0 ? 0 : ((2 ** bits - 1) >>> (bits - keep)) << (bits - keep);
    return word & mask & (2 ** bits - 1);
  });
}

/** The network's first address in its canonical text: ("192.0.2.77", 24) -> "192.0.2.0". */
export function networkBase(address: string, prefix: number): string {
  if (isIPv4(address)) {
    // The two prefixes used on every message, without arithmetic.
    if (prefix === 32) return address;
    if (prefix === 24) return `${address.slice(0, address.lastIndexOf('.'))}.0`;
    return maskWords(ipv4Octets(address), 8, prefix).join('.');
  }
  return formatIPv6(maskWords(ipv6Groups(address), 16, prefix));
}

/**
 * "192.0.2.77" with prefixes {ipv4: 24} -> "192.0.2.0/24"; "2001:db8:1:2:3::4" with {ipv6: 64}
 * -> "2001:db8:1:2::/64". Text that is not an address is returned as it is. A socket's zone
 * index is ignored.
 */
export function networkOf(address: string, prefixes: { readonly ipv4: number; readonly ipv6: number }): string {
  if (isIPv4(address)) return `${networkBase(address, prefixes.ipv4)}/${prefixes.ipv4}`;
  const bare = withoutZone(address);
  if (isIPv6(bare)) return `${networkBase(bare, prefixes.ipv6)}/${prefixes.ipv6}`;
  return address;
}

/** A set of networks to match peer addresses against (relay.networks). */
export type NetworkList = BlockList;

/** Builds the matcher from validated "address/prefix" texts (a bare address is one host). */
export function networkList(cidrs: readonly string[]): NetworkList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [addr, bits] = cidr.split('/');
    const type = isIPv4(addr) ? 'ipv4' : 'ipv6';
    const prefix = bits === undefined ? (type === 'ipv4' ? 32 : 128) : Number(bits);
    list.addSubnet(addr, prefix, type);
  }
  return list;
}

/** Whether a peer address lies in one of the networks; IPv4-mapped IPv6 is matched as IPv4. */
export function isInNetworks(list: NetworkList, address: string): boolean {
  const a = unmapIPv4(address);
  if (isIPv4(a)) return list.check(a, 'ipv4');
  if (isIPv6(withoutZone(a))) return list.check(a, 'ipv6');
  return false;
}
