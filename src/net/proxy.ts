// The PROXY protocol header a load balancer sends before the client's first byte (HAProxy's
// "proxy-protocol.txt", v1 text and v2 binary): parsed from bytes, sans-I/O. Bytes in; out comes
// needs-more, done (source, destination, the header's length and the bytes after it, handed back
// untouched) or invalid with a reason. Never reads past the header, never holds more than one
// header's worth of input (v1: 107 octets, v2: 16 + MAX_V2_PAYLOAD_BYTES), never throws on input.
//
// Why our own and not `proxy-protocol-js` (read at 4.0.6, its last release, December 2024): it
// parses one complete buffer (v1 from a string) and throws on anything else, so the socket shell
// would still have to find where the header ends, cap it and tell "not yet" from "never" itself,
// which is most of the work and all of the risk; it has no size cap of its own, returns addresses
// as byte arrays and adds a class per address family. The parts we need (two framings, three
// families, TLV skipping) are about 150 lines, and the decision points (when a prefix is already
// invalid, when to stop waiting) are the security-relevant part, so they are kept here and tested.
//
// Chunking never changes the answer: each decision only looks at bytes whose position is fixed by
// the bytes before them (a signature prefix, the first LF, the v2 length), so a longer prefix of
// the same input never turns invalid into needs-more or changes where the header ends.

import { formatIPv6, ipv6Groups, isIPv4, isIPv6 } from './ip.ts';

export type ProxyEndpoint = { readonly address: string; readonly port: number };

/**
 * What the proxy said. `source` and `destination` are null when the header carries no client
 * addresses: v2 LOCAL (the proxy's own health check), v1 UNKNOWN, or a v2 family other than
 * AF_INET/AF_INET6 (AF_UNSPEC, AF_UNIX). The receiver then keeps the socket's own addresses.
 */
export type ProxyHeader = {
  readonly version: 1 | 2;
  readonly command: 'proxy' | 'local';
  readonly source: ProxyEndpoint | null;
  readonly destination: ProxyEndpoint | null;
};

export type ProxyParse =
  | { readonly type: 'needs-more' }
  | { readonly type: 'done'; readonly header: ProxyHeader; readonly consumed: number; readonly rest: Uint8Array }
  | { readonly type: 'invalid'; readonly reason: string };

/** v1: "PROXY" ... CRLF is at most 107 octets (proxy-protocol.txt 2.1). */
export const MAX_V1_BYTES = 107;
/** v2: the address block and the TLVs after the 16-octet fixed part. The spec allows 65535;
 *  HAProxy's own TLVs (ALPN, authority, SSL, unique id) and cloud load balancers' (AWS VPC
 *  endpoint, Azure link id) fit in a few hundred octets. More is refused, not buffered. */
export const MAX_V2_PAYLOAD_BYTES = 1024;

const V1_PREFIX = [0x50, 0x52, 0x4f, 0x58, 0x59, 0x20]; // "PROXY "
const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
const V2_FIXED_BYTES = 16;
const NEEDS_MORE: ProxyParse = { type: 'needs-more' };

function invalid(reason: string): ProxyParse {
  return { type: 'invalid', reason };
}

/** Whether the first bytes of `input` agree with `expected` as far as both go. */
function agreesWith(input: Uint8Array, expected: readonly number[]): boolean {
  const n = Math.min(input.length, expected.length);
  for (let i = 0; i < n; i++) if (input[i] !== expected[i]) return false;
  return true;
}

/**
 * Parses the header at the start of `input` (everything read from the connection so far).
 * `maxV2PayloadBytes` lowers (never raises past 65535) the v2 cap.
 */
export function parseProxyHeader(input: Uint8Array, maxV2PayloadBytes = MAX_V2_PAYLOAD_BYTES): ProxyParse {
  if (input.length === 0) return NEEDS_MORE;
  if (input[0] === V1_PREFIX[0]) return parseV1(input);
  if (input[0] === V2_SIGNATURE[0]) return parseV2(input, maxV2PayloadBytes);
  return invalid('not a PROXY protocol header');
}

function done(header: ProxyHeader, input: Uint8Array, consumed: number): ProxyParse {
  return { type: 'done', header, consumed, rest: input.subarray(consumed) };
}

// --- v1: "PROXY TCP4|TCP6 src dst sport dport\r\n" or "PROXY UNKNOWN ...\r\n" ---

/** "0" to "65535", no sign, no leading zero (proxy-protocol.txt 2.1). */
function parsePort(text: string): number | null {
  if (!/^(0|[1-9]\d{0,4})$/.test(text)) return null;
  const port = Number(text);
  return port <= 65535 ? port : null;
}

function parseV1(input: Uint8Array): ProxyParse {
  if (!agreesWith(input, V1_PREFIX)) return invalid('not a PROXY protocol header');
  const limit = Math.min(input.length, MAX_V1_BYTES);
  let lf = -1;
  for (let i = 0; i < limit; i++) {
    if (input[i] === 0x0a) {
      lf = i;
      break;
    }
  }
  if (lf < 0) return input.length >= MAX_V1_BYTES ? invalid('v1 header longer than 107 octets') : NEEDS_MORE;
  if (input[lf - 1] !== 0x0d) return invalid('v1 header ends in a bare LF');
  const end = lf - 1;
  let line = '';
  for (let i = 0; i < end; i++) {
    const c = input[i];
    // Security: printable US-ASCII only; the line reaches the log.
    if (c < 0x20 || c > 0x7e) return invalid('v1 header holds a control or non-ASCII octet');
    line += String.fromCharCode(c);
  }
  const consumed = lf + 1;
  const words = line.split(' ');
  // The spec: anything after UNKNOWN up to the CRLF is to be ignored.
  if (words[1] === 'UNKNOWN') return done({ version: 1, command: 'proxy', source: null, destination: null }, input, consumed);
  if (words.length !== 6) return invalid('v1 header does not have six fields separated by single spaces');
  const [, family, srcText, dstText, sportText, dportText] = words;
  const isValidAddress = family === 'TCP4' ? isIPv4 : family === 'TCP6' ? isIPv6 : null;
  if (isValidAddress === null) return invalid('v1 protocol is not TCP4, TCP6 or UNKNOWN');
  if (!isValidAddress(srcText) || !isValidAddress(dstText)) return invalid(`v1 address is not an ${family === 'TCP4' ? 'IPv4' : 'IPv6'} address`);
  const sport = parsePort(sportText);
  const dport = parsePort(dportText);
  if (sport === null || dport === null) return invalid('v1 port is not an integer from 0 to 65535');
  const canonical = (a: string): string => (family === 'TCP6' ? formatIPv6(ipv6Groups(a)) : a);
  return done(
    { version: 1, command: 'proxy', source: { address: canonical(srcText), port: sport }, destination: { address: canonical(dstText), port: dport } },
    input,
    consumed,
  );
}

// --- v2: 12-octet signature, version/command, family/transport, length, addresses, TLVs ---

const AF_UNSPEC = 0x0;
const AF_INET = 0x1;
const AF_INET6 = 0x2;
const AF_UNIX = 0x3;
const TRANSPORT_UNSPEC = 0x0;
const TRANSPORT_STREAM = 0x1;
const TRANSPORT_DGRAM = 0x2;
/** Octets of the address block per family (proxy-protocol.txt 2.2). */
const ADDRESS_BYTES: Record<number, number> = { [AF_UNSPEC]: 0, [AF_INET]: 12, [AF_INET6]: 36, [AF_UNIX]: 216 };

function parseV2(input: Uint8Array, maxPayload: number): ProxyParse {
  if (!agreesWith(input, V2_SIGNATURE)) return invalid('not a PROXY protocol header');
  if (input.length < 13) return NEEDS_MORE;
  const versionCommand = input[12];
  if (versionCommand >> 4 !== 2) return invalid('v2 version is not 2');
  const commandBits = versionCommand & 0x0f;
  if (commandBits > 1) return invalid('v2 command is neither LOCAL nor PROXY');
  const command = commandBits === 0 ? 'local' : 'proxy';
  if (input.length < 14) return NEEDS_MORE;
  const family = input[13] >> 4;
  const transport = input[13] & 0x0f;
  if (!(family in ADDRESS_BYTES)) return invalid('v2 address family is unknown');
  if (transport !== TRANSPORT_UNSPEC && transport !== TRANSPORT_STREAM && transport !== TRANSPORT_DGRAM) return invalid('v2 transport is unknown');
  if (input.length < V2_FIXED_BYTES) return NEEDS_MORE;
  const length = (input[14] << 8) | input[15];
  if (length > Math.min(maxPayload, 0xffff)) return invalid(`v2 header longer than ${V2_FIXED_BYTES} + ${maxPayload} octets`);
  const consumed = V2_FIXED_BYTES + length;
  if (input.length < consumed) return NEEDS_MORE;
  // LOCAL: the proxy speaks for itself (a health check); the address block, if any, is ignored.
  if (command === 'local') return done({ version: 2, command, source: null, destination: null }, input, consumed);
  const addressBytes = ADDRESS_BYTES[family];
  if (length < addressBytes) return invalid('v2 length is shorter than its address block');
  const tlvProblem = checkTlvs(input, V2_FIXED_BYTES + addressBytes, consumed);
  if (tlvProblem !== null) return invalid(tlvProblem);
  if (family === AF_UNSPEC || family === AF_UNIX) return done({ version: 2, command, source: null, destination: null }, input, consumed);
  // SMTP runs over TCP: a relayed datagram flow is not a client we can talk to.
  if (transport !== TRANSPORT_STREAM) return invalid('v2 PROXY over an IP family must be a stream (TCP)');
  const at = V2_FIXED_BYTES;
  let source: ProxyEndpoint;
  let destination: ProxyEndpoint;
  if (family === AF_INET) {
    source = { address: ipv4At(input, at), port: portAt(input, at + 8) };
    destination = { address: ipv4At(input, at + 4), port: portAt(input, at + 10) };
  } else {
    source = { address: ipv6At(input, at), port: portAt(input, at + 32) };
    destination = { address: ipv6At(input, at + 16), port: portAt(input, at + 34) };
  }
  return done({ version: 2, command, source, destination }, input, consumed);
}

/** TLVs are skipped, but they must tile the rest of the header exactly (type, 2-octet length, value). */
function checkTlvs(input: Uint8Array, from: number, to: number): string | null {
  let at = from;
  while (at < to) {
    if (to - at < 3) return 'v2 TLV is cut short';
    const length = (input[at + 1] << 8) | input[at + 2];
    at += 3 + length;
    if (at > to) return 'v2 TLV runs past the header';
  }
  return null;
}

function portAt(input: Uint8Array, at: number): number {
  return (input[at] << 8) | input[at + 1];
}

function ipv4At(input: Uint8Array, at: number): string {
  return `${input[at]}.${input[at + 1]}.${input[at + 2]}.${input[at + 3]}`;
}

function ipv6At(input: Uint8Array, at: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((input[at + i] << 8) | input[at + i + 1]);
  return formatIPv6(groups);
}

/**
 * Accumulates a connection's first chunks until the header is decided. Holds at most one chunk
 * past the cap (the chunk that completes or overflows the header), and only until the answer.
 */
export class ProxyHeaderReader {
  #buffered: Uint8Array = new Uint8Array(0);
  #result: ProxyParse = NEEDS_MORE;
  readonly #maxV2PayloadBytes: number;

  constructor(maxV2PayloadBytes = MAX_V2_PAYLOAD_BYTES) {
    this.#maxV2PayloadBytes = maxV2PayloadBytes;
  }

  /** Adds the next chunk read; once the answer is done or invalid, later chunks do not change it. */
  push(chunk: Uint8Array): ProxyParse {
    if (this.#result.type !== 'needs-more') return this.#result;
    const merged = new Uint8Array(this.#buffered.length + chunk.length);
    merged.set(this.#buffered, 0);
    merged.set(chunk, this.#buffered.length);
    this.#result = parseProxyHeader(merged, this.#maxV2PayloadBytes);
    this.#buffered = this.#result.type === 'needs-more' ? merged : new Uint8Array(0);
    return this.#result;
  }
}
