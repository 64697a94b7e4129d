// PROXY protocol header parsing: examples of each framing and family, what is refused and why,
// and properties (any chunking gives the same answer; arbitrary bytes never throw; encoder round trip).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { formatIPv6, ipv6Groups } from './ip.ts';
import { MAX_V1_BYTES, MAX_V2_PAYLOAD_BYTES, parseProxyHeader, ProxyHeaderReader, type ProxyParse } from './proxy.ts';

const SEED = 20261202;
const RUNS = 1000;
const SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);

type Endpoint = { address: string; port: number };

/** A small v2 encoder of our own (the test's oracle): PROXY over TCP, or LOCAL; optional TLVs. */
function v2(opts: { command: 'proxy' | 'local'; family: 4 | 6 | 0; src?: Endpoint; dst?: Endpoint; tlvs?: Uint8Array[]; transport?: number }): Uint8Array {
  const addr: number[] = [];
  if (opts.family === 4) {
    for (const e of [opts.src!, opts.dst!]) addr.push(...e.address.split('.').map(Number));
  } else if (opts.family === 6) {
    for (const e of [opts.src!, opts.dst!]) for (const g of ipv6Groups(e.address)) addr.push(g >> 8, g & 0xff);
  }
  if (opts.family !== 0) for (const e of [opts.src!, opts.dst!]) addr.push(e.port >> 8, e.port & 0xff);
  for (const t of opts.tlvs ?? []) addr.push(...t);
  const fam = opts.family === 4 ? 1 : opts.family === 6 ? 2 : 0;
  const transport = opts.transport ?? (opts.family === 0 ? 0 : 1);
  return new Uint8Array([...SIGNATURE, 0x20 | (opts.command === 'proxy' ? 1 : 0), (fam << 4) | transport, addr.length >> 8, addr.length & 0xff, ...addr]);
}

function tlv(type: number, value: number[]): Uint8Array {
  return new Uint8Array([type, value.length >> 8, value.length & 0xff, ...value]);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Comparable form: rest as a plain array. */
function plain(r: ProxyParse): unknown {
  return r.type === 'done' ? { ...r, rest: [...r.rest] } : r;
}

function feedChunks(bytes: Uint8Array, cuts: number[]): ProxyParse {
  const reader = new ProxyHeaderReader();
  let at = 0;
  let result: ProxyParse = { type: 'needs-more' };
  for (const cut of [...new Set(cuts)].sort((a, b) => a - b).concat(bytes.length)) {
    if (cut < at || cut > bytes.length) continue;
    result = reader.push(bytes.subarray(at, cut));
    at = cut;
    if (result.type !== 'needs-more') break;
  }
  // The bytes not yet pushed when the answer came follow the rest the reader handed back.
  return result.type === 'done' ? { ...result, rest: concat(result.rest, bytes.subarray(at)) } : result;
}

test('v1 TCP4, TCP6 and UNKNOWN; the bytes after the header are handed back', () => {
  const r = parseProxyHeader(ascii('PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO x\r\n'));
  assert.equal(r.type, 'done');
  if (r.type !== 'done') return;
  assert.deepEqual(r.header, { version: 1, command: 'proxy', source: { address: '192.0.2.1', port: 56324 }, destination: { address: '198.51.100.2', port: 25 } });
  assert.equal(r.consumed, 44);
  assert.equal(new TextDecoder().decode(r.rest), 'EHLO x\r\n');
  const six = parseProxyHeader(ascii('PROXY TCP6 2001:DB8:0::1 2001:db8::2 1 65535\r\n'));
  assert.equal(six.type === 'done' && six.header.source?.address, '2001:db8::1');
  assert.equal(six.type === 'done' && six.header.destination?.port, 65535);
  const unknown = parseProxyHeader(ascii('PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n'));
  assert.deepEqual(unknown.type === 'done' && unknown.header, { version: 1, command: 'proxy', source: null, destination: null });
  assert.equal(parseProxyHeader(ascii('PROXY UNKNOWN\r\n')).type, 'done');
});

test('v1: what is refused, and when it is too early to tell', () => {
  const reason = (s: string): string | null => {
    const r = parseProxyHeader(ascii(s));
    return r.type === 'invalid' ? r.reason : r.type;
  };
  assert.equal(reason('PROXY TCP4 192.0.2.1'), 'needs-more');
  assert.equal(reason('PRO'), 'needs-more');
  assert.equal(reason('EHLO client.example\r\n'), 'not a PROXY protocol header');
  assert.equal(reason('PROXI'), 'not a PROXY protocol header');
  assert.equal(reason('PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n'), 'v1 header ends in a bare LF');
  assert.equal(reason('PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n'), 'v1 header does not have six fields separated by single spaces');
  assert.equal(reason('PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n'), 'v1 protocol is not TCP4, TCP6 or UNKNOWN');
  assert.equal(reason('PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n'), 'v1 address is not an IPv4 address');
  assert.equal(reason('PROXY TCP6 192.0.2.1 2001:db8::1 1 2\r\n'), 'v1 address is not an IPv6 address');
  assert.equal(reason('PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n'), 'v1 port is not an integer from 0 to 65535');
  assert.equal(reason('PROXY TCP4 192.0.2.1 192.0.2.2 1 65536\r\n'), 'v1 port is not an integer from 0 to 65535');
  assert.equal(reason('PROXY TCP4 192.0.2.1 192.0.2.2 1 2\x00\r\n'), 'v1 header holds a control or non-ASCII octet');
  // The cap: 107 octets without an LF is refused, one fewer is still waiting.
  assert.equal(reason(`PROXY UNKNOWN ${'x'.repeat(MAX_V1_BYTES - 15)}`), 'needs-more');
  assert.equal(reason(`PROXY UNKNOWN ${'x'.repeat(MAX_V1_BYTES - 14)}`), 'v1 header longer than 107 octets');
  // The longest valid header (TCP6, two longest addresses and ports) is exactly 104 octets: accepted.
  const longest = `PROXY TCP6 ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`;
  assert.equal(parseProxyHeader(ascii(longest)).type, 'done');
  assert.equal(parseProxyHeader(ascii(`PROXY UNKNOWN ${'x'.repeat(MAX_V1_BYTES - 16)}\r\n`)).type, 'done');
});

test('v2 PROXY over AF_INET and AF_INET6, LOCAL, AF_UNSPEC and TLVs', () => {
  const src = { address: '203.0.113.9', port: 40000 };
  const dst = { address: '192.0.2.25', port: 25 };
  const four = parseProxyHeader(concat(v2({ command: 'proxy', family: 4, src, dst }), ascii('EHLO')));
  assert.deepEqual(plain(four), { type: 'done', header: { version: 2, command: 'proxy', source: src, destination: dst }, consumed: 28, rest: [...ascii('EHLO')] });
  const six = parseProxyHeader(v2({ command: 'proxy', family: 6, src: { address: '2001:db8::9', port: 1 }, dst: { address: '::1', port: 2 } }));
  assert.equal(six.type === 'done' && six.header.source?.address, '2001:db8::9');
  assert.equal(six.type === 'done' && six.consumed, 52);
  const local = parseProxyHeader(v2({ command: 'local', family: 0 }));
  assert.deepEqual(local.type === 'done' && local.header, { version: 2, command: 'local', source: null, destination: null });
  // HAProxy's health check sends LOCAL; an address block after it is ignored.
  const localWithAddresses = parseProxyHeader(v2({ command: 'local', family: 4, src, dst }));
  assert.deepEqual(localWithAddresses.type === 'done' && localWithAddresses.header.source, null);
  const unspec = parseProxyHeader(v2({ command: 'proxy', family: 0 }));
  assert.deepEqual(unspec.type === 'done' && unspec.header.source, null);
  const withTlvs = parseProxyHeader(v2({ command: 'proxy', family: 4, src, dst, tlvs: [tlv(0x01, [...ascii('smtp')]), tlv(0x04, [])] }));
  assert.equal(withTlvs.type === 'done' && withTlvs.consumed, 28 + 7 + 3);
});

test('v2: what is refused, and when it is too early to tell', () => {
  const src = { address: '203.0.113.9', port: 40000 };
  const good = v2({ command: 'proxy', family: 4, src, dst: src });
  const reason = (b: Uint8Array): string => {
    const r = parseProxyHeader(b);
    return r.type === 'invalid' ? r.reason : r.type;
  };
  for (let n = 1; n < good.length; n++) assert.equal(reason(good.subarray(0, n)), 'needs-more', `prefix of ${n}`);
  assert.equal(reason(new Uint8Array([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0b])), 'not a PROXY protocol header');
  const patched = (i: number, v: number): Uint8Array => {
    const b = good.slice();
    b[i] = v;
    return b;
  };
  assert.equal(reason(patched(12, 0x11)), 'v2 version is not 2');
  assert.equal(reason(patched(12, 0x22)), 'v2 command is neither LOCAL nor PROXY');
  assert.equal(reason(patched(13, 0x41)), 'v2 address family is unknown');
  assert.equal(reason(patched(13, 0x13)), 'v2 transport is unknown');
  assert.equal(reason(patched(13, 0x12)), 'v2 PROXY over an IP family must be a stream (TCP)');
  assert.equal(reason(patched(15, 4)), 'v2 length is shorter than its address block');
  // The cap is decided from the length field alone, before any of the payload is buffered.
  const huge = good.slice(0, 16);
  huge[14] = (MAX_V2_PAYLOAD_BYTES + 1) >> 8;
  huge[15] = (MAX_V2_PAYLOAD_BYTES + 1) & 0xff;
  assert.equal(reason(huge), `v2 header longer than 16 + ${MAX_V2_PAYLOAD_BYTES} octets`);
  assert.equal(reason(v2({ command: 'proxy', family: 4, src, dst: src, tlvs: [new Uint8Array([1, 0])] })), 'v2 TLV is cut short');
  assert.equal(reason(v2({ command: 'proxy', family: 4, src, dst: src, tlvs: [new Uint8Array([1, 0, 9, 1])] })), 'v2 TLV runs past the header');
});

test('the reader keeps its answer once decided and never grows past one header', () => {
  const reader = new ProxyHeaderReader();
  assert.equal(reader.push(ascii('PROXY TCP4 192.0.2.1 ')).type, 'needs-more');
  const r = reader.push(ascii('192.0.2.2 1 2\r\nQUIT\r\n'));
  assert.equal(r.type, 'done');
  assert.deepEqual(reader.push(ascii('more')), r);
  const bad = new ProxyHeaderReader();
  assert.equal(bad.push(ascii('P')).type, 'needs-more');
  // "Px" can never become "PROXY ": refused at the second octet, not at the cap.
  assert.equal(bad.push(ascii('x')).type, 'invalid');
});

// --- properties ---

const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));
const ipv6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((g) => formatIPv6(g));
const port = fc.nat(65535);
const endpoint = (addr: fc.Arbitrary<string>) => fc.tuple(addr, port).map(([address, p]) => ({ address, port: p }));

/** A header (v1 or v2, any family) with what it must parse to. */
const headerCase = fc.oneof(
  fc.tuple(endpoint(ipv4), endpoint(ipv4)).map(([s, d]) => ({ bytes: ascii(`PROXY TCP4 ${s.address} ${d.address} ${s.port} ${d.port}\r\n`), header: { version: 1, command: 'proxy', source: s, destination: d } })),
  fc.tuple(endpoint(ipv6), endpoint(ipv6)).map(([s, d]) => ({ bytes: ascii(`PROXY TCP6 ${s.address} ${d.address} ${s.port} ${d.port}\r\n`), header: { version: 1, command: 'proxy', source: s, destination: d } })),
  fc.tuple(endpoint(ipv4), endpoint(ipv4), fc.array(fc.tuple(fc.nat(255), fc.uint8Array({ maxLength: 40 })), { maxLength: 4 })).map(([s, d, tlvs]) => ({
    bytes: v2({ command: 'proxy', family: 4, src: s, dst: d, tlvs: tlvs.map(([t, v]) => tlv(t, [...v])) }),
    header: { version: 2, command: 'proxy', source: s, destination: d },
  })),
  fc.tuple(endpoint(ipv6), endpoint(ipv6)).map(([s, d]) => ({ bytes: v2({ command: 'proxy', family: 6, src: s, dst: d }), header: { version: 2, command: 'proxy', source: s, destination: d } })),
  fc.constant({ bytes: v2({ command: 'local', family: 0 }), header: { version: 2, command: 'local', source: null, destination: null } }),
);

test('round trip: every encoded header parses to what was encoded, the rest handed back untouched', () => {
  fc.assert(
    fc.property(headerCase, fc.uint8Array({ maxLength: 64 }), ({ bytes, header }, rest) => {
      const r = parseProxyHeader(concat(bytes, rest));
      assert.deepEqual(plain(r), { type: 'done', header, consumed: bytes.length, rest: [...rest] });
    }),
    { seed: SEED, numRuns: RUNS },
  );
});

test('any chunking of the same bytes gives the same answer as the whole (headers, mutated headers, noise)', () => {
  const mutated = fc.tuple(headerCase, fc.nat(200), fc.nat(255)).map(([c, i, v]) => {
    const b = c.bytes.slice();
    if (b.length > 0) b[i % b.length] = v;
    return b;
  });
  const input = fc.tuple(fc.oneof(headerCase.map((c) => c.bytes), mutated, fc.uint8Array({ maxLength: 200 })), fc.uint8Array({ maxLength: 32 })).map(([a, b]) => concat(a, b));
  fc.assert(
    fc.property(input, fc.array(fc.nat(250), { maxLength: 12 }), (bytes, cuts) => {
      const whole = parseProxyHeader(bytes);
      const chunked = feedChunks(bytes, cuts);
      assert.deepEqual(plain(chunked), plain(whole));
      // Byte by byte too.
      assert.deepEqual(plain(feedChunks(bytes, [...bytes.keys()])), plain(whole));
    }),
    { seed: SEED, numRuns: RUNS },
  );
});

test('arbitrary bytes never throw, and a header never consumes more than its cap', () => {
  const starts = fc.oneof(fc.constant(new Uint8Array(SIGNATURE)), fc.constant(ascii('PROXY ')), fc.constant(new Uint8Array(0)));
  fc.assert(
    fc.property(starts, fc.uint8Array({ maxLength: 1200 }), (start, tail) => {
      const r = parseProxyHeader(concat(start, tail));
      if (r.type === 'done') assert.ok(r.consumed <= Math.max(MAX_V1_BYTES, 16 + MAX_V2_PAYLOAD_BYTES));
    }),
    { seed: SEED, numRuns: RUNS },
  );
});
