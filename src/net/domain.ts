// Host-name validity, the one place its rules and limits are written. Three uses, three rules:
// - an SMTP domain in a path or a source route (RFC 5321 4.1.2 Domain, up to 255 octets by
//   4.5.3.1.2; U-labels only under SMTPUTF8, RFC 6531 3.3);
// - a host name we configure or insist on (smtp.hostname, local domains, DNS-list zones, a
//   required HELO FQDN): RFC 1123 2.1 letters-digits-hyphen labels, a name that fits in DNS
//   (253 characters), a top-level label that is not all digits (RFC 3696 2);
// - a DNS name we look up or quote (an SPF identity, a DNS-list zone in a reply): labels of
//   letters, digits, hyphens and underscores (RFC 2181 11 allows any octet; "_" is real, in
//   service names), 63 octets each, 253 characters in all.
// Pure string work; no DNS.

/** RFC 1035 2.3.4: a label is at most 63 octets. */
export const MAX_LABEL_OCTETS = 63;

/**
 * RFC 1035 2.3.4 / 3.1: a name is at most 255 octets on the wire, counting each label's length
 * octet and the root label, which leaves 253 characters of dotted text (no trailing dot).
 */
export const MAX_DNS_NAME_CHARS = 253;

/**
 * RFC 5321 4.5.3.1.2: a domain in an SMTP command may have up to 255 octets. That is more than
 * DNS can hold (MAX_DNS_NAME_CHARS); such a name is syntax we accept, not a name that resolves.
 */
export const MAX_SMTP_DOMAIN_OCTETS = 255;

/**
 * RFC 5321 Domain: sub-domains of Let-dig [Ldh-str] (RFC 1123 2.1 labels), no trailing dot, at
 * most MAX_SMTP_DOMAIN_OCTETS octets of UTF-8. Non-ASCII code points are allowed only where
 * `isAllowedNonAscii` says so (SMTPUTF8 U-labels; the protocol decides which); null: ASCII only.
 */
export function isSmtpDomain(s: string, isAllowedNonAscii: ((code: number) => boolean) | null): boolean {
  if (s.length === 0 || s.length > MAX_SMTP_DOMAIN_OCTETS) {
    return false;
  }
  let labelLength = 0;
  let isAscii = true;
  for (let i = 0; i <= s.length; i++) {
    const c = i === s.length ? 0x2e : s.charCodeAt(i);
    if (c === 0x2e) {
      if (labelLength === 0 || labelLength > MAX_LABEL_OCTETS) return false;
      // A label neither starts nor ends with a hyphen.
      if (s.charCodeAt(i - labelLength) === 0x2d || s.charCodeAt(i - 1) === 0x2d) return false;
      labelLength = 0;
      continue;
    }
    labelLength++;
    if ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d) continue;
    if (c >= 128 && isAllowedNonAscii !== null && isAllowedNonAscii(c)) {
      isAscii = false;
      continue;
    }
    return false;
  }
  return isAscii || Buffer.byteLength(s) <= MAX_SMTP_DOMAIN_OCTETS;
}

/** RFC 1123 2.1: letters, digits and inner hyphens, 1 to 63 octets. */
const LDH_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

/** Why a text is not an RFC 1123 host name we accept (see the header), or null. */
export type HostNameProblem =
  | { kind: 'empty' }
  | { kind: 'too-long' }
  | { kind: 'empty-label' }
  | { kind: 'bad-label'; label: string }
  | { kind: 'numeric-top-label' };

/** The host-name rule for names we configure or insist on; `name` has no trailing dot. */
export function hostNameProblem(name: string): HostNameProblem | null {
  if (name === '') return { kind: 'empty' };
  if (name.length > MAX_DNS_NAME_CHARS) return { kind: 'too-long' };
  const labels = name.split('.');
  for (const label of labels) {
    if (label === '') return { kind: 'empty-label' };
    if (!LDH_LABEL.test(label)) return { kind: 'bad-label', label };
  }
  // RFC 3696 2: a top-level domain is never all digits, so "10.0.0" is a mistyped address.
  if (/^\d+$/.test(labels[labels.length - 1])) return { kind: 'numeric-top-label' };
  return null;
}

/** A fully-qualified host name: two labels or more under the host-name rule; one trailing dot tolerated. */
export function isFqdn(name: string): boolean {
  const bare = name.endsWith('.') ? name.slice(0, -1) : name;
  return bare.includes('.') && hostNameProblem(bare) === null;
}

/** Letters, digits, "_" and "-", 1 to 63 octets (see the header). */
const DNS_LABEL = /^[a-z0-9_-]{1,63}$/i;

/** The DNS-name rule for names we look up or quote, with at least `minLabels` labels; no trailing dot. */
export function isDnsName(name: string, minLabels = 1): boolean {
  if (name === '' || name.length > MAX_DNS_NAME_CHARS) return false;
  const labels = name.split('.');
  return labels.length >= minLabels && labels.every((label) => DNS_LABEL.test(label));
}
