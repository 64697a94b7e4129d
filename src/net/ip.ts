// IP address text forms, the one place they are validated, parsed and printed: IPv4 dotted quads,
// IPv6 in every RFC 4291 2.2 text form (with "::" and a trailing dotted IPv4 part), the RFC 5952
// 4.2 canonical IPv6 text, and the IPv4-mapped IPv6 rule. Pure string work: no node:net, no I/O,
// so the sans-I/O core (src/protocol) may import it.

/** RFC 4291 2.2: one to four hexadecimal digits. */
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** The longest IP address text: eight groups with the last two as a dotted quad (RFC 4291 2.2 form 3),
 *  "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255". */
export const MAX_IP_TEXT_CHARS = 45;

/**
 * A dotted-quad IPv4 address ("192.0.2.1"): four RFC 3986 3.2.2 dec-octets, 0-255 without leading
 * zeros; the same answer as node:net's isIPv4. One pass over the characters, no allocation: the
 * policy checks ask it for the client address of every message.
 */
export function isIPv4(text: string): boolean {
  const n = text.length;
  if (n < 7 || n > 15) return false;
  let octets = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= n; i++) {
    const c = i === n ? 0x2e : text.charCodeAt(i);
    if (c === 0x2e) {
      if (digits === 0 || value > 255) return false;
      octets++;
      value = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      // "0" is an octet; "01" is not.
      if (digits > 0 && value === 0) return false;
      value = value * 10 + (c - 0x30);
      if (++digits > 3) return false;
    } else {
      return false;
    }
  }
  return octets === 4;
}

/**
 * An IPv6 address in any RFC 4291 2.2 text form, without a zone index: the same answer as
 * node:net's isIPv6 for every text without "%" (node also accepts "fe80::1%eth0"; RFC 5321's
 * IPv6-addr, a CIDR and a DNS query name have no zone, so callers that can meet one strip it
 * first with withoutZone).
 */
export function isIPv6(text: string): boolean {
  if (text.length < 2 || text.length > MAX_IP_TEXT_CHARS) return false;
  const gap = text.indexOf('::');
  if (gap >= 0 && text.indexOf('::', gap + 1) >= 0) return false;
  const head = gap < 0 ? text : text.slice(0, gap);
  const tail = gap < 0 ? '' : text.slice(gap + 2);
  const parts = [...(head === '' ? [] : head.split(':')), ...(tail === '' ? [] : tail.split(':'))];
  // A dotted IPv4 part ends the text (RFC 4291 2.2 form 3): never before a "::".
  const isV4Allowed = gap < 0 || tail !== '';
  let groups = 0;
  for (let i = 0; i < parts.length; i++) {
    // A dotted IPv4 part stands for the last two groups.
    if (isV4Allowed && i === parts.length - 1 && parts[i].includes('.')) {
      if (!isIPv4(parts[i])) return false;
      groups += 2;
    } else if (HEX_GROUP.test(parts[i])) {
      groups++;
    } else {
      return false;
    }
  }
  // Without "::" all eight groups are written; "::" stands for one or more zero groups.
  return gap < 0 ? groups === 8 : groups <= 7;
}

/** 4, 6, or 0 for text that is neither (as node:net's isIP, but no zone index). */
export function ipFamily(text: string): 0 | 4 | 6 {
  return isIPv4(text) ? 4 : isIPv6(text) ? 6 : 0;
}

/** "fe80::1%eth0" -> "fe80::1": a socket's peer address may carry an RFC 4007 11 zone index. */
export function withoutZone(address: string): string {
  const percent = address.indexOf('%');
  return percent < 0 ? address : address.slice(0, percent);
}

const IPV4_MAPPED = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i;

/**
 * The IPv4-mapped IPv6 rule, in one place: a dual-stack listener reports an IPv4 client as
 * "::ffff:a.b.c.d" (RFC 4291 2.5.5.2); that client is the IPv4 address a.b.c.d for relay
 * networks, DNS lists (RFC 5782 2.1) and SPF (RFC 7208 5, ip4). Any other text is returned as it is.
 */
export function unmapIPv4(address: string): string {
  const m = IPV4_MAPPED.exec(address);
  return m === null ? address : m[1];
}

/** The four octets of a valid IPv4 address. */
export function ipv4Octets(address: string): number[] {
  return address.split('.').map(Number);
}

/** Eight 16-bit groups of a valid IPv6 address (`isIPv6(address)`, no "%zone"). */
export function ipv6Groups(address: string): number[] {
  let text = address.toLowerCase();
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

/** RFC 5952 4.2: lowercase, no leading zeros, the longest run (two or more) of zero groups as "::". */
export function formatIPv6(groups: readonly number[]): string {
  let [bestStart, bestLength] = [-1, 1];
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

/** One text form per address: RFC 5952 for IPv6 ("2001:db8:0::1" -> "2001:db8::1", zone index
 *  dropped), IPv4 and anything else as it is. */
export function canonicalIp(address: string): string {
  const bare = withoutZone(address);
  return isIPv6(bare) ? formatIPv6(ipv6Groups(bare)) : address;
}
