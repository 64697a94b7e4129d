// The client network a remembered verdict is keyed by: IPv4 /24, IPv6 /64 (the grouping
// greylisting uses too: senders rotate addresses within their network). Pure string work.

import { isIPv4, isIPv6 } from 'node:net';

export function clientNetwork(address: string): string {
  if (isIPv4(address)) return `${address.split('.').slice(0, 3).join('.')}.0/24`;
  if (isIPv6(address)) {
    // Expand "::" so the first four groups are the /64.
    const [head, tail = ''] = address.toLowerCase().split('::');
    const h = head === '' ? [] : head.split(':');
    const t = address.includes('::') ? (tail === '' ? [] : tail.split(':')) : [];
    const groups = address.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
    return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
  }
  return address;
}
