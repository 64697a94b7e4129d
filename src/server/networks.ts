// The shell's view of relay networks and peer addresses. The rules live in src/net/ (CIDR
// matching, the IPv4-mapped IPv6 rule); this module keeps the names the shell imports.

export { isInNetworks, networkList } from '../net/cidr.ts';
export { unmapIPv4 as normalizeAddress } from '../net/ip.ts';
