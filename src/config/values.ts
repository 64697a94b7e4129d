// What configuration values mean: host names, listen addresses, filter endpoints, networks, DNS servers, the
// state store, the list of policy checks. Built from the generic validators (validators.ts) and
// the one home of each rule (net/ for IP, CIDR and host names). Pure.

import { domainToASCII } from 'node:url';
import { parseCidr } from '../net/cidr.ts';
import { hostNameProblem, MAX_DNS_NAME_CHARS, MAX_LABEL_OCTETS } from '../net/domain.ts';
import { formatEndpoint, parseEndpoint, type Endpoint, type EndpointExamples } from '../net/endpoint.ts';
import { ipFamily } from '../net/ip.ts';
import { closest } from './suggest.ts';
import type { ListenAddress } from './types.ts';
import { fail, ok, show, stringList, typeName, type Validator } from './validators.ts';

/** Why `name` is not a host name we accept (net/domain.ts: RFC 1123 2.1 labels), or undefined. */
export function domainProblem(name: string): string | undefined {
  if (name === '') return 'must not be empty';
  if (/[^\x00-\x7f]/.test(name)) {
    // Internationalised names travel as A-labels unless SMTPUTF8 is in play (RFC 5890 2.3.2.1).
    const ascii = domainToASCII(name.replace(/\.+$/, ''));
    return ascii === '' ? 'must be an ASCII host name' : `must be ASCII: write the A-label form "${ascii}"`;
  }
  if (name.endsWith('.')) return `must not end with a dot: write "${name.replace(/\.+$/, '')}"`;
  if (ipFamily(name) !== 0) return 'must be a domain name, not an IP address';
  const problem = hostNameProblem(name);
  switch (problem?.kind) {
    case undefined:
      return undefined;
    case 'empty':
      return 'must not be empty';
    case 'too-long':
      return `must be at most ${MAX_DNS_NAME_CHARS} characters (RFC 1035 2.3.4)`;
    case 'empty-label':
      return 'must not have an empty label (two dots in a row, or a leading dot)';
    case 'bad-label':
      return `label "${problem.label}" is not valid: use letters, digits and inner hyphens, at most ${MAX_LABEL_OCTETS} characters`;
    case 'numeric-top-label':
      return 'must not end in an all-digit label';
  }
}

export function domainName(): Validator<string> {
  return {
    type: 'string',
    allowed: 'a domain name (letters, digits, hyphens, dots; no trailing dot)',
    check(value, path) {
      if (typeof value !== 'string') return fail(path, value, `must be a string (a domain name), not ${typeName(value)}`);
      const problem = domainProblem(value);
      return problem === undefined ? ok(value) : fail(path, value, problem);
    },
    toToml: (value) => JSON.stringify(value),
  };
}

export function domainList(): Validator<string[]> {
  return stringList({
    what: 'domain names',
    example: '["example.test"]',
    allowed: 'domain names; `[]` for none',
    noun: 'a string (a domain name)',
    element(value, path) {
      const problem = domainProblem(value);
      // Domains compare case-insensitively (RFC 5321 2.4); lowercasing once here spares every reader.
      return problem === undefined ? ok(value.toLowerCase()) : fail(path, value, problem);
    },
    post: (values) => ok([...new Set(values)]),
  });
}

export function parseListen(text: string): ListenAddress | string {
  let host: string;
  let portText: string;
  const bracketed = /^\[([^\]]*)\]:([^:]*)$/.exec(text);
  if (bracketed !== null) {
    [, host, portText] = bracketed;
    if (ipFamily(host) !== 6) return `"[${host}]" must hold an IPv6 address`;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return 'must be "host:port", e.g. "127.0.0.1:2525" or "[::1]:2525"';
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) return 'an IPv6 address goes in brackets, e.g. "[::1]:2525"';
    if (host === '') return 'has no host: use "0.0.0.0:PORT" for every IPv4 address, "[::]:PORT" for IPv6';
    if (ipFamily(host) === 0) {
      const problem = domainProblem(host);
      if (problem !== undefined) return `host "${host}" is not an IP address or host name: ${problem}`;
      host = host.toLowerCase();
    }
  }
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) return `port "${portText}" must be an integer from 1 to 65535`;
  return { host, port };
}

export function formatListen(address: ListenAddress): string {
  return ipFamily(address.host) === 6 ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

export function listenList(): Validator<ListenAddress[]> {
  return stringList({
    what: '"host:port" strings',
    example: '["127.0.0.1:2525"]',
    allowed: 'one or more `"host:port"`; IPv6 in brackets; port 1 to 65535',
    noun: 'a "host:port" string',
    element(value, path) {
      const parsed = parseListen(value);
      return typeof parsed === 'string' ? fail(path, value, parsed) : ok(parsed);
    },
    post(values, value, path) {
      if (values.length === 0) return fail(path, value, 'must list at least one "host:port"');
      // Binding the same address twice fails at start-up with EADDRINUSE; say so now, precisely.
      const problems: string[] = [];
      const seen = new Map<string, number>();
      values.forEach((address, i) => {
        const id = `${address.host.toLowerCase()} ${address.port}`;
        const first = seen.get(id);
        if (first === undefined) seen.set(id, i);
        else problems.push(`${path}[${i}] = ${show(formatListen(address))}: same address as ${path}[${first}]`);
      });
      return problems.length === 0 ? ok(values) : { ok: false, problems };
    },
    itemToml: (address) => JSON.stringify(formatListen(address)),
  });
}

/** One "host:port" to listen on, or "" for off. */
export function optionalListen(): Validator<ListenAddress | null> {
  return {
    type: 'string',
    allowed: '`"host:port"` (IPv6 in brackets), or `""` for off',
    check(value, path) {
      if (value === '') return ok(null);
      if (typeof value !== 'string') return fail(path, value, `must be a "host:port" string or "", not ${typeName(value)}`);
      const parsed = parseListen(value);
      return typeof parsed === 'string' ? fail(path, value, parsed) : ok(parsed);
    },
    toToml: (value) => JSON.stringify(value === null ? '' : formatListen(value)),
  };
}


export function workers(): Validator<number | 'auto'> {
  const [min, max] = [1, 64];
  return {
    type: 'string or integer',
    allowed: `\`"auto"\` or ${min} to ${max}`,
    check(value, path) {
      if (value === 'auto') return ok(value);
      if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) return ok(value);
      return fail(path, value, `must be "auto" or an integer from ${min} to ${max}`);
    },
    toToml: (value) => (value === 'auto' ? '"auto"' : String(value)),
  };
}

// --- CIDR networks (the arithmetic is net/cidr.ts) ---


/** Normalises a network to "address/prefix", or explains what is wrong with it. */
export function parseNetwork(text: string): string | { problem: string } {
  const parsed = parseCidr(text);
  // Security: /0 lets every client on the Internet relay through us: an open relay, never intended.
  const isOpen = 'kind' in parsed ? parsed.kind === 'host-bits' && parsed.prefix === 0 : parsed.prefix === 0;
  if (isOpen) return { problem: 'a /0 network would let every client relay (an open relay)' };
  if ('kind' in parsed) {
    switch (parsed.kind) {
      case 'not-an-address':
        return { problem: 'is not an IP address or CIDR network, e.g. "192.0.2.0/24" or "2001:db8::/32"' };
      case 'bad-prefix':
        return { problem: `prefix "/${parsed.prefixText}" must be an integer from 1 to ${parsed.maxPrefix}` };
      case 'host-bits': {
        // "10.1.2.3/8" is usually a typo for one host or for the network; make the operator say which.
        const slash = text.indexOf('/');
        return { problem: `has host bits set: write "${parsed.network}/${parsed.prefix}" for the network, or "${text.slice(0, slash)}" for one host` };
      }
    }
  }
  return `${parsed.address.toLowerCase()}/${parsed.prefix}`;
}

export function networkList(): Validator<string[]> {
  return stringList({
    what: 'CIDR strings',
    example: '["127.0.0.0/8", "::1/128"]',
    allowed: 'IPv4 or IPv6 CIDR networks, prefix /1 or longer; a bare address means /32 or /128; `[]` for nobody',
    noun: 'a CIDR string',
    element(value, path) {
      const parsed = parseNetwork(value);
      return typeof parsed === 'string' ? ok(parsed) : fail(path, value, parsed.problem);
    },
  });
}

/** DNS servers as node's Resolver.setServers takes them: "ip", "ip:port", "[ipv6]:port". */
export function dnsServers(): Validator<string[]> {
  return stringList({
    what: 'DNS server addresses',
    example: '["127.0.0.1:5353"]',
    allowed: 'IP addresses, optionally with a port (`"127.0.0.1:5353"`, `"[::1]:53"`); `[]` for the system resolver',
    element(value, path) {
      if (ipFamily(value) !== 0) return ok(value);
      const bracketed = /^\[([^\]]+)\]:(\d{1,5})$/.exec(value);
      const plain = /^([^:]+):(\d{1,5})$/.exec(value);
      const [host, port] = bracketed !== null ? [bracketed[1], bracketed[2]] : plain !== null ? [plain[1], plain[2]] : ['', ''];
      if (host === '' || ipFamily(host) === 0) {
        return fail(path, value, 'must be an IP address, "ip:port" or "[ipv6]:port" (a DNS server is named by address, not by name)');
      }
      if (!(Number(port) >= 1 && Number(port) <= 65535)) return fail(path, value, `port "${port}" must be an integer from 1 to 65535`);
      return ok(value);
    },
  });
}

/** The policy checks to run, in order; each name once. `names`: the registered checks. */
export function checkList<N extends string>(names: readonly N[]): Validator<N[]> {
  const listed = names.map((n) => JSON.stringify(n)).join(', ');
  const notOne = (value: unknown, path: string) => {
    const near = typeof value === 'string' ? closest(value, names) : undefined;
    return fail(path, value, `must be one of ${listed}${near === undefined ? '' : ` (did you mean "${near}"?)`}`);
  };
  return stringList<N>({
    what: 'check names',
    example: '["recipients", "dnsbl", "greylist"]',
    allowed: `each of ${names.map((n) => `\`"${n}"\``).join(', ')} at most once; \`[]\` for none`,
    element: (value, path) => ((names as readonly string[]).includes(value) ? ok(value as N) : notOne(value, path)),
    nonString: notOne,
    post(values, _value, path) {
      const problems: string[] = [];
      values.forEach((name, i) => {
        const first = values.indexOf(name);
        if (first !== i) problems.push(`${path}[${i}] = ${show(name)}: already listed as ${path}[${first}]`);
      });
      return problems.length === 0 ? ok(values) : { ok: false, problems };
    },
  });
}

/** `"sqlite"` or a Redis URL (redis://host:port/db, rediss:// for TLS). */
export function stateStore(): Validator<string> {
  return {
    type: 'string',
    allowed: '`"sqlite"`, or a Redis URL `"redis://host:port/db"` (`rediss://` for TLS)',
    check(value, path) {
      if (value === 'sqlite') return ok(value);
      if (typeof value === 'string' && /^rediss?:\/\/[^\s/]+(\/\d{1,2})?$/.test(value)) return ok(value);
      // Never echo a Redis URL back: it may hold a password.
      return typeof value === 'string' && value.startsWith('redis')
        ? { ok: false, problems: [`${path}: must be a Redis URL like "redis://127.0.0.1:6379/0"`] }
        : fail(path, value, 'must be "sqlite" or a Redis URL like "redis://127.0.0.1:6379/0"');
    },
    toToml: (value) => JSON.stringify(value),
  };
}

/** A filter's address (net/endpoint.ts: "host:port", "[v6]:port", "inet:port@host", a UNIX socket), or `""`: off. */
export function optionalEndpoint(examples: EndpointExamples): Validator<Endpoint | null> {
  return {
    type: 'string',
    allowed: `\`"host:port"\` (e.g. \`"${examples.tcp}"\`), \`"[ipv6]:port"\`, \`"inet:port@host"\`, a UNIX socket (\`"${examples.unix}"\`, \`"unix:/path"\`), or \`""\`: off`,
    check(value, path) {
      if (typeof value !== 'string') return fail(path, value, `must be a string such as "${examples.tcp}" or "${examples.unix}", not ${typeName(value)}`);
      if (value === '') return ok(null);
      const parsed = parseEndpoint(value, examples);
      return typeof parsed === 'string' ? fail(path, value, parsed) : ok(parsed);
    },
    toToml: (a) => JSON.stringify(a === null ? '' : formatEndpoint(a)),
  };
}
