// Membership of a client address in a list of CIDR networks (relay.networks and friends).
// Never resolves names; IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are matched as IPv4.

import { BlockList, isIPv4, isIPv6 } from 'node:net';

export function normalizeAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m === null ? address : m[1];
}

export function networkList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const [addr, bits] = cidr.split('/');
    const type = isIPv4(addr) ? 'ipv4' : 'ipv6';
    const prefix = bits === undefined ? (type === 'ipv4' ? 32 : 128) : Number(bits);
    list.addSubnet(addr, prefix, type);
  }
  return list;
}

export function isInNetworks(list: BlockList, address: string): boolean {
  const a = normalizeAddress(address);
  if (isIPv4(a)) return list.check(a, 'ipv4');
  if (isIPv6(a)) return list.check(a, 'ipv6');
  return false;
}
