// Parsing of reverse-paths, forward-paths, domains and address literals.
// Pure functions over strings; never decides policy (relay, local) — it only says what was sent.
// RFC 5321 4.1.2 (syntax), 4.1.1.3 and Appendix C (source routes: accepted, ignored),
// 4.5.3.1 (size limits), RFC 6531 3.3 (UTF-8 local parts and domains under SMTPUTF8).
// Host-name rules and IP text forms come from src/net/ (pure leaves, no I/O).

import { isSmtpDomain } from '../net/domain.ts';
import { isIPv4, isIPv6 } from '../net/ip.ts';

export type Mailbox = {
  localPart: string;
  /** Lower-cased domain, or the address literal with brackets (e.g. "[192.0.2.1]"). */
  domain: string;
  isAddressLiteral: boolean;
  /** True when either part holds non-ASCII (needs SMTPUTF8). */
  isUtf8: boolean;
};

export type PathResult =
  | { ok: true; mailbox: Mailbox | null; /** text after the closing ">" */ rest: string; hadSourceRoute: boolean }
  | { ok: false; reason: string };

const MAX_LOCAL_PART = 64; // RFC 5321 4.5.3.1.1, octets
const MAX_PATH = 256; // RFC 5321 4.5.3.1.3, octets, brackets included

// atext (RFC 5322 3.2.3) as a lookup table over ASCII.
const ATEXT = new Uint8Array(128);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~") {
  ATEXT[c.charCodeAt(0)] = 1;
}

/**
 * Security: RFC 6531 allows UTF-8, but not C1 controls (U+0080-U+009F, e.g. CSI terminal
 * escapes) or bidirectional overrides (U+202A-U+202E, U+2066-U+2069, U+200E/F), which would
 * reach logs, Received: headers and `spool list` output; nor U+FFFD, which stands for octets that
 * were not valid UTF-8.
 */
export function isAllowedNonAscii(code: number): boolean {
  if (code <= 0x9f) return false;
  if (code === 0x200e || code === 0x200f || (code >= 0x202a && code <= 0x202e) || (code >= 0x2066 && code <= 0x2069)) return false;
  return code !== 0xfffd;
}

function isAtextChar(code: number, allowUtf8: boolean): boolean {
  return code < 128 ? ATEXT[code] === 1 : allowUtf8 && isAllowedNonAscii(code);
}

function isDotString(s: string, allowUtf8: boolean): boolean {
  if (s.length === 0 || s[0] === '.' || s[s.length - 1] === '.') return false;
  let prevDot = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2e) {
      if (prevDot) return false;
      prevDot = true;
    } else {
      if (!isAtextChar(c, allowUtf8)) return false;
      prevDot = false;
    }
  }
  return true;
}

/** RFC 5321 Quoted-string with qtextSMTP / quoted-pairSMTP (plus UTF-8 under RFC 6531). */
function isQuotedString(s: string, allowUtf8: boolean): boolean {
  if (s.length < 2 || s[0] !== '"' || s[s.length - 1] !== '"') return false;
  for (let i = 1; i < s.length - 1; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x5c) {
      i++;
      if (i >= s.length - 1) return false;
      const q = s.charCodeAt(i);
      if (q < 32 || q > 126) return false;
    } else if (c === 0x22) {
      return false;
    } else if (c >= 128) {
      if (!allowUtf8 || !isAllowedNonAscii(c)) return false;
    } else if (c < 32 || c > 126) {
      return false;
    }
  }
  return true;
}

/** RFC 5321 Domain (net/domain.ts isSmtpDomain): no trailing dot; U-labels under SMTPUTF8. */
export function isDomain(s: string, allowUtf8 = false): boolean {
  return isSmtpDomain(s, allowUtf8 ? isAllowedNonAscii : null);
}

/** RFC 5321 address-literal: "[" IPv4 / "IPv6:" IPv6 / General-address-literal "]". */
export function isAddressLiteral(s: string): boolean {
  if (s.length < 3 || s[0] !== '[' || s[s.length - 1] !== ']') return false;
  const inner = s.slice(1, -1);
  if (isIPv4(inner)) return true;
  // RFC 5321 IPv6-addr has no zone index ("%eth0"); net/ip.ts isIPv6 accepts none.
  if (inner.slice(0, 5).toLowerCase() === 'ipv6:') return isIPv6(inner.slice(5));
  // General-address-literal: Standardized-tag ":" 1*dcontent. No tag other than IPv6 is
  // registered, so anything else is refused rather than passed on.
  return false;
}

function hasNonAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 128) return true;
  return false;
}

export function parseMailbox(s: string, allowUtf8: boolean): Mailbox | null {
  const at = s.lastIndexOf('@');
  if (at <= 0 || at === s.length - 1) return null;
  const localPart = s.slice(0, at);
  const domainText = s.slice(at + 1);
  if (Buffer.byteLength(localPart) > MAX_LOCAL_PART) return null;
  if (!(isDotString(localPart, allowUtf8) || isQuotedString(localPart, allowUtf8))) return null;
  // A quoted local part may itself hold "@": lastIndexOf picks the real separator, and the
  // quoted-string check above rejects a split that cuts through the quotes.
  let domain: string;
  let isLiteral = false;
  if (domainText[0] === '[') {
    if (!isAddressLiteral(domainText)) return null;
    domain = domainText.toLowerCase();
    isLiteral = true;
  } else {
    if (!isDomain(domainText, allowUtf8)) return null;
    domain = domainText.toLowerCase();
  }
  return { localPart, domain, isAddressLiteral: isLiteral, isUtf8: hasNonAscii(localPart) || hasNonAscii(domainText) };
}

/**
 * Parses "<...>" at the start of `text` (leading spaces tolerated: many clients send
 * "MAIL FROM: <a@b>"). `allowNull` accepts "<>" (reverse-path). Returns the text after ">".
 */
export function parsePath(text: string, opts: { allowNull: boolean; allowUtf8: boolean }): PathResult {
  let i = 0;
  while (text[i] === ' ') i++;
  if (text[i] !== '<') return { ok: false, reason: 'path must be enclosed in <>' };
  // Find the closing ">" outside a quoted local part.
  let j = i + 1;
  let inQuote = false;
  for (; j < text.length; j++) {
    const c = text[j];
    if (inQuote) {
      if (c === '\\') j++;
      else if (c === '"') inQuote = false;
    } else if (c === '"') {
      inQuote = true;
    } else if (c === '>') {
      break;
    }
  }
  if (j >= text.length) return { ok: false, reason: 'missing ">"' };
  if (Buffer.byteLength(text.slice(i, j + 1)) > MAX_PATH) return { ok: false, reason: 'path too long' };
  let inner = text.slice(i + 1, j);
  const rest = text.slice(j + 1);
  if (inner === '') {
    return opts.allowNull ? { ok: true, mailbox: null, rest, hadSourceRoute: false } : { ok: false, reason: 'null path not allowed here' };
  }
  let hadSourceRoute = false;
  if (inner[0] === '@') {
    // A-d-l ":" Mailbox. RFC 5321 4.1.1.3: the route is accepted and ignored; each hop must
    // still be a valid At-domain so garbage is not waved through.
    const colon = inner.indexOf(':');
    if (colon === -1) return { ok: false, reason: 'bad source route' };
    for (const hop of inner.slice(0, colon).split(',')) {
      if (hop[0] !== '@') return { ok: false, reason: 'bad source route' };
      const d = hop.slice(1);
      if (!(isDomain(d, opts.allowUtf8) || isAddressLiteral(d))) return { ok: false, reason: 'bad source route' };
    }
    inner = inner.slice(colon + 1);
    hadSourceRoute = true;
  }
  const mailbox = parseMailbox(inner, true);
  if (mailbox === null) return { ok: false, reason: 'bad mailbox syntax' };
  if (mailbox.isUtf8 && !opts.allowUtf8) return { ok: false, reason: 'utf8' };
  return { ok: true, mailbox, rest, hadSourceRoute };
}

export function formatMailbox(m: Mailbox): string {
  return `${m.localPart}@${m.domain}`;
}

/** RFC 3461 4: xtext decoding ("+" HEXCHAR HEXCHAR); null when malformed. */
export function decodeXtext(s: string): string | null {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2b) {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) return null;
      out += String.fromCharCode(parseInt(hex, 16));
      i += 2;
    } else if (c < 33 || c > 126 || c === 0x3d) {
      return null;
    } else {
      out += s[i];
    }
  }
  return out;
}

/** RFC 3461 4: xtext encoding for values we write back (DSN fields). */
export function encodeXtext(s: string): string {
  let out = '';
  for (const ch of Buffer.from(s, 'utf8')) {
    out += ch < 33 || ch > 126 || ch === 0x2b || ch === 0x3d ? `+${ch.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(ch);
  }
  return out;
}
