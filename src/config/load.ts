// The configuration loader: TOML text -> validated Config, with every problem reported at once.
// Owns the key table (CONFIG_KEYS), the one source for keys, defaults, limits and their docs.
// Never starts anything or touches the network; it reads only the file it is given.

import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { domainToASCII } from 'node:url';
import { parse, TomlDate, TomlError } from 'smol-toml';
import { defaultConfig } from './types.ts';
import type { Config, DnsListConfig, ListenAddress, PolicyCheckName } from './types.ts';
import { POLICY_CHECK_NAMES } from './types.ts';
import { parseCidr } from '../net/cidr.ts';
import { hostNameProblem, MAX_DNS_NAME_CHARS, MAX_LABEL_OCTETS } from '../net/domain.ts';
import { ipFamily } from '../net/ip.ts';
import { MAX_MESSAGE_BYTES, MAX_SEGMENT_BYTES } from '../spool/format.ts';
import { parseAnswerPattern } from '../policy/checks/dnsbl.ts';

/** Thrown for any invalid configuration; `problems` holds one line per problem, in file order. */
export class ConfigError extends Error {
  readonly code = 'PORTCULLIS_CONFIG';
  readonly problems: string[];
  /** The file name (or other label) the text came from. */
  readonly source: string;

  constructor(source: string, problems: string[]) {
    const summary =
      problems.length === 1 ? problems[0] : `${problems.length} problems:\n  ${problems.join('\n  ')}`;
    super(`${source}: ${summary}`);
    this.name = 'ConfigError';
    this.source = source;
    this.problems = problems;
  }
}

// ---------------------------------------------------------------------------------------------
// Validators: each knows its type, what it allows (for the docs) and how to write a value as TOML.

type Checked<T> = { ok: true; value: T } | { ok: false; problems: string[] };

type Validator<T> = {
  /** Shown in the docs, e.g. "integer". */
  type: string;
  /** Shown in the docs: the values accepted. */
  allowed: string;
  check(value: unknown, path: string): Checked<T>;
  /** Writes a value as TOML: used for the documented defaults and the round-trip test. */
  toToml(value: T): string;
};

function ok<T>(value: T): Checked<T> {
  return { ok: true, value };
}

function fail(path: string, value: unknown, text: string): { ok: false; problems: string[] } {
  return { ok: false, problems: [`${path} = ${show(value)}: ${text}`] };
}

const MAX_SHOWN_CHARS = 80;

/** A value as the operator wrote it (near enough), one line, bounded so a huge value cannot flood the output. */
function show(value: unknown): string {
  const text = showUnbounded(value);
  return text.length > MAX_SHOWN_CHARS ? `${text.slice(0, MAX_SHOWN_CHARS - 1)}…` : text;
}

function showUnbounded(value: unknown): string {
  // JSON string escapes keep control characters from reaching a terminal or log raw.
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return `[${value.map(showUnbounded).join(', ')}]`;
  if (isTable(value)) {
    const entries = Object.entries(value).map(([k, v]) => `${k} = ${showUnbounded(v)}`);
    return `{ ${entries.join(', ')} }`;
  }
  return String(value);
}

function typeName(value: unknown): string {
  if (typeof value === 'string') return 'a string';
  if (typeof value === 'boolean') return 'a boolean';
  if (typeof value === 'number') return Number.isInteger(value) ? 'an integer' : 'a float';
  if (value instanceof Date) return 'a date';
  if (Array.isArray(value)) return 'an array';
  if (isTable(value)) return 'a table';
  return typeof value;
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof TomlDate);
}

const BYTE_UNITS = [
  ['GiB', 2 ** 30],
  ['MiB', 2 ** 20],
  ['KiB', 2 ** 10],
] as const;

/** 1048576 -> "1048576 (1 MiB)", so limits in messages and docs read at a glance. */
function bytesText(n: number): string {
  for (const [unit, size] of BYTE_UNITS) {
    if (n >= size && n % size === 0) return `${n} (${n / size} ${unit})`;
  }
  return String(n);
}

/** `rfc` names where the minimum comes from; `maxReason` says why the maximum is what it is. */
function int(min: number, max: number, options: { rfc?: string; bytes?: boolean; maxReason?: string } = {}): Validator<number> {
  const fmt = options.bytes === true ? bytesText : String;
  const rfc = options.rfc === undefined ? '' : ` (${options.rfc})`;
  const maxReason = options.maxReason === undefined ? '' : `: ${options.maxReason}`;
  return {
    type: 'integer',
    allowed:
      `${fmt(min)} to ${fmt(max)}${options.rfc === undefined ? '' : `; the minimum is from ${options.rfc}`}` +
      `${options.maxReason === undefined ? '' : `; the maximum is ${options.maxReason}`}`,
    check(value, path) {
      if (typeof value !== 'number' || !Number.isInteger(value)) {
        return fail(path, value, `must be an integer from ${fmt(min)} to ${fmt(max)}, not ${typeName(value)}`);
      }
      if (value < min) return fail(path, value, `must be an integer >= ${fmt(min)}${rfc}`);
      if (value > max) return fail(path, value, `must be an integer <= ${fmt(max)}${maxReason}`);
      return ok(value);
    },
    toToml: String,
  };
}

function bool(): Validator<boolean> {
  return {
    type: 'boolean',
    allowed: '`true` or `false`',
    check(value, path) {
      return typeof value === 'boolean' ? ok(value) : fail(path, value, `must be true or false, not ${typeName(value)}`);
    },
    toToml: String,
  };
}

/** `"sqlite"` or a Redis URL (redis://host:port/db, rediss:// for TLS). */
function stateStore(): Validator<string> {
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

function oneOf<const T extends string>(choices: readonly T[]): Validator<T> {
  const listed = choices.map((c) => JSON.stringify(c)).join(', ');
  return {
    type: 'string',
    allowed: `one of ${choices.map((c) => `\`"${c}"\``).join(', ')}`,
    check(value, path) {
      if (typeof value === 'string' && (choices as readonly string[]).includes(value)) return ok(value as T);
      // `vrfy = 252` is an easy slip: the choice is a string, so say how to write it.
      const quoted = (choices as readonly string[]).includes(String(value)) && typeof value !== 'string';
      return fail(path, value, `must be one of ${listed}${quoted ? ` (a string: write "${String(value)}" in quotes)` : ''}`);
    },
    toToml: (value) => JSON.stringify(value),
  };
}

/** A file system path. `allowEmpty` is for optional files, where "" means "none". */
function pathString(options: { allowEmpty: boolean }): Validator<string> {
  return {
    type: 'string (path)',
    allowed: options.allowEmpty ? 'a file path, or `""` for none' : 'a non-empty directory path',
    check(value, path) {
      if (typeof value !== 'string') return fail(path, value, `must be a string (a path), not ${typeName(value)}`);
      if (value === '' && !options.allowEmpty) return fail(path, value, 'must not be empty');
      // Security: a NUL would be cut off by the OS, so the file opened would not be the one named.
      if (value.includes('\0')) return fail(path, value, 'must not contain a NUL character');
      return ok(value);
    },
    toToml: (value) => JSON.stringify(value),
  };
}

/** Why `name` is not a host name we accept (net/domain.ts: RFC 1123 2.1 labels), or undefined. */
function domainProblem(name: string): string | undefined {
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

function domainName(): Validator<string> {
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

/** Applies `element` to each item, so each bad item is reported with its index. */
function arrayOf<T>(
  what: string,
  example: string,
  element: (value: unknown, path: string) => Checked<T>,
): (value: unknown, path: string) => Checked<T[]> {
  return (value, path) => {
    if (!Array.isArray(value)) return fail(path, value, `must be an array of ${what}, e.g. ${example}`);
    const values: T[] = [];
    const problems: string[] = [];
    value.forEach((item, i) => {
      const checked = element(item, `${path}[${i}]`);
      if (checked.ok) values.push(checked.value);
      else problems.push(...checked.problems);
    });
    return problems.length === 0 ? ok(values) : { ok: false, problems };
  };
}

function domainList(): Validator<string[]> {
  const each = arrayOf('domain names', '["example.test"]', (value, path) => {
    if (typeof value !== 'string') return fail(path, value, `must be a string (a domain name), not ${typeName(value)}`);
    const problem = domainProblem(value);
    // Domains compare case-insensitively (RFC 5321 2.4); lowercasing once here spares every reader.
    return problem === undefined ? ok(value.toLowerCase()) : fail(path, value, problem);
  });
  return {
    type: 'array of strings',
    allowed: 'domain names; `[]` for none',
    check(value, path) {
      const checked = each(value, path);
      return checked.ok ? ok([...new Set(checked.value)]) : checked;
    },
    toToml: (value) => `[${value.map((d) => JSON.stringify(d)).join(', ')}]`,
  };
}

function parseListen(text: string): ListenAddress | string {
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

function formatListen(address: ListenAddress): string {
  return ipFamily(address.host) === 6 ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

function listenList(): Validator<ListenAddress[]> {
  const each = arrayOf('"host:port" strings', '["127.0.0.1:2525"]', (value, path) => {
    if (typeof value !== 'string') return fail(path, value, `must be a "host:port" string, not ${typeName(value)}`);
    const parsed = parseListen(value);
    return typeof parsed === 'string' ? fail(path, value, parsed) : ok(parsed);
  });
  return {
    type: 'array of strings',
    allowed: 'one or more `"host:port"`; IPv6 in brackets; port 1 to 65535',
    check(value, path) {
      const checked = each(value, path);
      if (!checked.ok) return checked;
      if (checked.value.length === 0) return fail(path, value, 'must list at least one "host:port"');
      // Binding the same address twice fails at start-up with EADDRINUSE; say so now, precisely.
      const problems: string[] = [];
      const seen = new Map<string, number>();
      checked.value.forEach((address, i) => {
        const id = `${address.host.toLowerCase()} ${address.port}`;
        const first = seen.get(id);
        if (first === undefined) seen.set(id, i);
        else problems.push(`${path}[${i}] = ${show(formatListen(address))}: same address as ${path}[${first}]`);
      });
      return problems.length === 0 ? checked : { ok: false, problems };
    },
    toToml: (value) => `[${value.map((a) => JSON.stringify(formatListen(a))).join(', ')}]`,
  };
}

function workers(): Validator<number | 'auto'> {
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
function parseNetwork(text: string): string | { problem: string } {
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

function networkList(): Validator<string[]> {
  const each = arrayOf('CIDR strings', '["127.0.0.0/8", "::1/128"]', (value, path) => {
    if (typeof value !== 'string') return fail(path, value, `must be a CIDR string, not ${typeName(value)}`);
    const parsed = parseNetwork(value);
    return typeof parsed === 'string' ? ok(parsed) : fail(path, value, parsed.problem);
  });
  return {
    type: 'array of strings',
    allowed: 'IPv4 or IPv6 CIDR networks, prefix /1 or longer; a bare address means /32 or /128; `[]` for nobody',
    check: each,
    toToml: (value) => `[${value.map((n) => JSON.stringify(n)).join(', ')}]`,
  };
}

/** An integer, or `"off"`: the feature the number tunes is disabled. */
function intOrOff(min: number, max: number): Validator<number | null> {
  return {
    type: 'integer or string',
    allowed: `${min} to ${max}, or \`"off"\``,
    check(value, path) {
      if (value === 'off') return ok(null);
      if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) return ok(value);
      return fail(path, value, `must be an integer from ${min} to ${max}, or "off"`);
    },
    toToml: (value) => (value === null ? '"off"' : String(value)),
  };
}

/** One "host:port" to listen on, or "" for off. */
function optionalListen(): Validator<ListenAddress | null> {
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

/** DNS servers as node's Resolver.setServers takes them: "ip", "ip:port", "[ipv6]:port". */
function dnsServers(): Validator<string[]> {
  const each = arrayOf('DNS server addresses', '["127.0.0.1:5353"]', (value, path) => {
    if (typeof value !== 'string') return fail(path, value, `must be a string, not ${typeName(value)}`);
    if (ipFamily(value) !== 0) return ok(value);
    const bracketed = /^\[([^\]]+)\]:(\d{1,5})$/.exec(value);
    const plain = /^([^:]+):(\d{1,5})$/.exec(value);
    const [host, port] = bracketed !== null ? [bracketed[1], bracketed[2]] : plain !== null ? [plain[1], plain[2]] : ['', ''];
    if (host === '' || ipFamily(host) === 0) {
      return fail(path, value, 'must be an IP address, "ip:port" or "[ipv6]:port" (a DNS server is named by address, not by name)');
    }
    if (!(Number(port) >= 1 && Number(port) <= 65535)) return fail(path, value, `port "${port}" must be an integer from 1 to 65535`);
    return ok(value);
  });
  return {
    type: 'array of strings',
    allowed: 'IP addresses, optionally with a port (`"127.0.0.1:5353"`, `"[::1]:53"`); `[]` for the system resolver',
    check: each,
    toToml: (value) => `[${value.map((v) => JSON.stringify(v)).join(', ')}]`,
  };
}

/** Recipient addresses or "@domain" entries, as in the recipient table file. */
function recipientList(): Validator<string[]> {
  const each = arrayOf('addresses', '["alice@example.test", "@example.org"]', (value, path) => {
    if (typeof value !== 'string') return fail(path, value, `must be a string, not ${typeName(value)}`);
    if (/[\s\x00-\x1f\x7f]/.test(value) || !value.includes('@') || value.endsWith('@')) {
      return fail(path, value, 'must be an address ("alice@example.test") or "@domain" for a whole domain');
    }
    const domain = value.slice(value.lastIndexOf('@') + 1);
    const problem = domainProblem(domain);
    if (problem !== undefined) return fail(path, value, `domain "${domain}" ${problem}`);
    return ok(value.toLowerCase());
  });
  return {
    type: 'array of strings',
    allowed: 'addresses and `"@domain"` entries; `[]` for none',
    check: each,
    toToml: (value) => `[${value.map((v) => JSON.stringify(v)).join(', ')}]`,
  };
}

/** The policy checks to run, in order; each name once. */
function checkList(): Validator<PolicyCheckName[]> {
  const names = POLICY_CHECK_NAMES as readonly string[];
  const each = arrayOf('check names', '["recipients", "dnsbl", "greylist"]', (value, path) => {
    if (typeof value === 'string' && names.includes(value)) return ok(value as PolicyCheckName);
    const near = typeof value === 'string' ? closest(value, names) : undefined;
    return fail(path, value, `must be one of ${names.map((n) => JSON.stringify(n)).join(', ')}${near === undefined ? '' : ` (did you mean "${near}"?)`}`);
  });
  return {
    type: 'array of strings',
    allowed: `each of ${names.map((n) => `\`"${n}"\``).join(', ')} at most once; \`[]\` for none`,
    check(value, path) {
      const checked = each(value, path);
      if (!checked.ok) return checked;
      const problems: string[] = [];
      checked.value.forEach((name, i) => {
        const first = checked.value.indexOf(name);
        if (first !== i) problems.push(`${path}[${i}] = ${show(name)}: already listed as ${path}[${first}]`);
      });
      return problems.length === 0 ? checked : { ok: false, problems };
    },
    toToml: (value) => `[${value.map((v) => JSON.stringify(v)).join(', ')}]`,
  };
}

/** A DNS list's zone: a domain name of two labels or more (the check writes it into replies). */
function dnsListZone(): Validator<string> {
  const name = domainName();
  return {
    ...name,
    allowed: 'a domain name of two or more labels, e.g. `"zen.example"`',
    check(value, path) {
      const checked = name.check(value, path);
      if (checked.ok && !checked.value.includes('.')) return fail(path, value, 'must have two or more labels, e.g. "zen.example"');
      return checked;
    },
  };
}

/** A signed integer weight for a DNS list. */
function weight(): Validator<number> {
  return {
    type: 'integer',
    allowed: '-100 to 100, not 0; negative for an allow list',
    check(value, path) {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < -100 || value > 100) {
        return fail(path, value, 'must be an integer from -100 to 100 (negative for an allow list)');
      }
      if (value === 0) return fail(path, value, 'must not be 0 (a list that never counts); remove the [[dnsbl]] table instead');
      return ok(value);
    },
    toToml: String,
  };
}

/** Answer patterns of a DNS list, postscreen style: each octet a number, [a..b] or [a;b;c]. */
function answerPatterns(): Validator<string[]> {
  const each = arrayOf('answer patterns', '["127.0.0.[2..11]"]', (value, path) => {
    if (typeof value !== 'string') return fail(path, value, `must be a string, not ${typeName(value)}`);
    // The DNS list check's own parser: what the loader accepts is exactly what the check runs.
    const parsed = parseAnswerPattern(value);
    return parsed.ok ? ok(value) : fail(path, value, parsed.problem.replace(/^answer pattern "[^"]*",? /, ''));
  });
  return {
    type: 'array of strings',
    allowed: 'IPv4 patterns whose octets are a number, `[a..b]` or `[a;b;c]`; `[]` for any answer in 127.0.0.0/8 but 127.255.255.0/24',
    check: each,
    toToml: (value) => `[${value.map((v) => JSON.stringify(v)).join(', ')}]`,
  };
}

// ---------------------------------------------------------------------------------------------
// The key table.

const SECTIONS = [
  'smtp', 'tls', 'domains', 'relay', 'spool', 'recipients', 'verdicts', 'state', 'greylist', 'policy', 'dns', 'dnslists', 'spf', 'helo',
  'metrics', 'log',
] as const satisfies readonly (keyof Config)[];
type SectionName = (typeof SECTIONS)[number];

/** One configuration key: where it lives in TOML and in Config, what it accepts, and its documentation. */
export type ConfigKey = {
  /** TOML path, e.g. "smtp.max_message_bytes". */
  readonly path: string;
  readonly section: SectionName;
  /** The TOML key inside its section, e.g. "max_message_bytes". */
  readonly key: string;
  /** The field in `Config[section]`, e.g. "maxMessageBytes". */
  readonly field: string;
  /** Config path for readers, e.g. "smtp.maxMessageBytes". */
  readonly configPath: string;
  readonly type: string;
  readonly allowed: string;
  /** The embedded default written as TOML, e.g. `["127.0.0.1:2525"]`. */
  readonly defaultToml: string;
  /** What the key does; Markdown, one paragraph. */
  readonly doc: string;
  readonly check: (value: unknown, path: string) => Checked<unknown>;
};

const DEFAULTS = defaultConfig();

// The type parameters tie each entry's validator to the type of its Config field, so the
// untyped assignment in parseConfig is safe by construction.
function entry<S extends SectionName, F extends keyof Config[S] & string>(
  section: S,
  key: string,
  field: F,
  validator: Validator<Config[S][F]>,
  doc: string,
): ConfigKey {
  return {
    path: `${section}.${key}`,
    section,
    key,
    field,
    configPath: `${section}.${field}`,
    type: validator.type,
    allowed: validator.allowed,
    defaultToml: validator.toToml(DEFAULTS[section][field]),
    doc,
    check: (value, path) => validator.check(value, path),
  };
}

const RFC_COMMAND_LINE = 'RFC 5321 4.5.3.1.4';
const RFC_TEXT_LINE = 'RFC 5321 4.5.3.1.6';
const RFC_RECIPIENTS = 'RFC 5321 4.5.3.1.8';
const RFC_COMMAND_TIMEOUT = 'RFC 5321 4.5.3.2.7';
const RFC_DATA_TIMEOUT = 'RFC 5321 4.5.3.2.5';

export const CONFIG_KEYS: readonly ConfigKey[] = [
  entry('smtp', 'listen', 'listen', listenList(),
    'Addresses to accept SMTP connections on, each `"host:port"`. The host is an IP address, `localhost` or a host ' +
    'name looked up at start-up; write IPv6 addresses in brackets (`"[::1]:2525"`). `"0.0.0.0:25"` and `"[::]:25"` ' +
    'listen on every address. The same address may not appear twice.'),
  entry('smtp', 'hostname', 'hostname', domainName(),
    'The name this server announces in its greeting, its EHLO reply and the Received header fields it adds ' +
    '(RFC 5321 4.2, 4.4). Use the name the MX record and the reverse DNS of the listening address point at.'),
  entry('smtp', 'max_message_bytes', 'maxMessageBytes', int(2 ** 10, MAX_MESSAGE_BYTES, { bytes: true, maxReason: 'the largest message the spool stores, less room for the header fields the server adds' }),
    'Largest message accepted, in octets. Advertised with the EHLO `SIZE` keyword (RFC 1870) and enforced while the ' +
    'data is read, so a larger message is refused before it is stored.'),
  entry('smtp', 'workers', 'workers', workers(),
    '`"auto"` runs one worker process per CPU core; `1` serves from the main process; `N` runs N worker processes.'),
  entry('smtp', 'max_command_line_bytes', 'maxCommandLineBytes', int(512, 2 ** 16, { rfc: RFC_COMMAND_LINE, bytes: true }),
    'Longest command line accepted, in octets including the CRLF. RFC 5321 4.5.3.1.4 sets 512 as the floor; ESMTP ' +
    'parameters (for example DSN\'s `ENVID` or `AUTH=`) can push MAIL and RCPT lines past it, so raise this if ' +
    'clients need them.'),
  entry('smtp', 'max_text_line_bytes', 'maxTextLineBytes', int(1000, 2 ** 20, { rfc: RFC_TEXT_LINE, bytes: true }),
    'Longest line of message data accepted, in octets including the CRLF. RFC 5321 4.5.3.1.6 sets 1000 as the floor.'),
  entry('smtp', 'max_recipients', 'maxRecipients', int(100, 100_000, { rfc: RFC_RECIPIENTS }),
    'Recipients accepted in one transaction. Past it RCPT is answered 452 (RFC 5321 4.5.3.1.10) and the client sends ' +
    'the rest in another transaction. RFC 5321 4.5.3.1.8 requires room for at least 100.'),
  entry('smtp', 'max_errors', 'maxErrors', int(1, 1000),
    'Errors caused by the client tolerated in one session; the next one is answered `421 4.7.0` and the ' +
    'connection closed. Counted: replies to bad syntax, commands out of sequence, refused recipients and other ' +
    'policy refusals, refused message content. Not counted, being no fault of the client: `452` for too many ' +
    'recipients (RFC 5321 4.5.3.1.10 asks the client to send the rest in another transaction), `452 4.3.1` ' +
    'while the spool is low on space, `451` when the spool cannot store a message, and the closing `421`.'),
  entry('smtp', 'max_transactions', 'maxTransactions', int(1, 100_000),
    'Transactions (MAIL commands) allowed in one session; past it the server answers `421 4.7.0` and closes.'),
  entry('smtp', 'allow_empty_helo', 'allowEmptyHelo', bool(),
    'Accept HELO or EHLO without an argument, for broken clients; the client\'s identity then becomes its address. ' +
    'RFC 5321 4.1.1.1 requires the argument, so leave this off unless a known client needs it.'),
  entry('smtp', 'vrfy', 'vrfy', oneOf(['252', 'disabled']),
    '`"252"` answers every VRFY with 252 (cannot verify, will attempt delivery), so it never confirms whether an ' +
    'address exists (RFC 5321 3.5.3, 7.3); `"disabled"` answers 502.'),
  entry('smtp', 'expn', 'expn', oneOf(['252', 'disabled']),
    '`"disabled"` answers EXPN with 502; `"252"` answers it like VRFY. Either way no list is ever expanded ' +
    '(RFC 5321 7.3).'),
  entry('smtp', 'bare_line_endings', 'bareLineEndings', oneOf(['reject', 'normalize']),
    'What happens to a message whose data holds a bare CR, a bare LF or a NUL (the SMTP smuggling class): ' +
    '`"reject"` refuses it; `"normalize"` accepts it with its line endings rewritten. Either way only CRLF.CRLF ' +
    'ends the data (RFC 5321 4.1.1.4).'),
  entry('smtp', 'command_timeout_seconds', 'commandTimeoutSeconds', int(300, 3600, { rfc: RFC_COMMAND_TIMEOUT }),
    'How long the server waits for the next command before closing the connection. RFC 5321 4.5.3.2.7 asks for at ' +
    'least 5 minutes.'),
  entry('smtp', 'data_timeout_seconds', 'dataTimeoutSeconds', int(180, 3600, { rfc: RFC_DATA_TIMEOUT }),
    'How long the server waits between reads while receiving message data. RFC 5321 4.5.3.2.5 gives the client ' +
    '3 minutes per data block, so the server waits at least that long.'),

  entry('tls', 'cert', 'certFile', pathString({ allowEmpty: true }),
    'PEM certificate chain for STARTTLS. Set `tls.cert` and `tls.key` together, or leave both empty to have a ' +
    'self-signed certificate generated under the spool directory\'s parent. A relative path is resolved against ' +
    'the working directory.'),
  entry('tls', 'key', 'keyFile', pathString({ allowEmpty: true }),
    'PEM private key for `tls.cert`. Set both or neither. A relative path is resolved against the working directory.'),
  entry('tls', 'enabled', 'enabled', bool(),
    'Advertise and honour STARTTLS (RFC 3207).'),

  entry('domains', 'local', 'local', domainList(),
    'Domains this server accepts mail for, from any client. Lowercased on load and duplicates dropped; write ' +
    'internationalised names in their `xn--` form, without a trailing dot. `[]` accepts mail for no domain.'),

  entry('relay', 'networks', 'networks', networkList(),
    'Client networks allowed to relay, that is to send mail to domains not in `domains.local`. Each entry is a ' +
    'CIDR network such as `"192.0.2.0/24"` or `"2001:db8::/32"`; a bare address means that one host (`/32` or ' +
    '`/128`) and is stored in that form. Host bits must be clear, and `/0` is refused because it makes an open ' +
    'relay. `[]` lets nobody relay.'),

  entry('spool', 'dir', 'dir', pathString({ allowEmpty: false }),
    'Directory holding accepted messages until they are delivered. A relative path is resolved against the ' +
    'working directory.'),
  entry('spool', 'journal_max_message_bytes', 'journalMaxMessageBytes', int(0, 2 ** 26, { bytes: true }),
    'Messages up to this size are appended to the shared journal segment, so one fsync commits many of them; ' +
    'larger ones get a file of their own. `0` gives every message its own file. Must not exceed ' +
    '`spool.segment_max_bytes`.'),
  entry('spool', 'segment_max_bytes', 'segmentMaxBytes', int(2 ** 20, MAX_SEGMENT_BYTES, { bytes: true, maxReason: 'the largest segment the spool reader reads back' }),
    'A journal segment is closed, and a new one started, once it grows past this size.'),
  entry('spool', 'min_free_bytes', 'minFreeBytes', int(0, 2 ** 50, { bytes: true }),
    'While the spool\'s file system has less free space than this, MAIL is answered `452 4.3.1` (RFC 3463: ' +
    'insufficient system storage), so no client uploads a body that could not be stored; mail is accepted again ' +
    'once space returns. Checked every few seconds. `0` turns the check off.'),

  entry('recipients', 'table', 'table', pathString({ allowEmpty: true }),
    'A file of the recipients accepted for the local domains: one address per line, or `@domain` to accept every ' +
    'address of that domain; blank lines and lines starting with `#` are ignored. With a table, mail for any other ' +
    'address of a local domain is refused at RCPT (`550 5.1.1`), in the session, so it is never accepted and bounced ' +
    'later (backscatter), and the refusal counts toward the session\'s error and refusal limits. `Postmaster` is always ' +
    'accepted (RFC 5321 4.5.1). Empty: every address of a local domain is accepted. A relative path is resolved ' +
    'against the working directory; the file is read at start-up.'),
  entry('recipients', 'addresses', 'addresses', recipientList(),
    'Accepted recipients written in the configuration itself, in the same forms as the table file ' +
    '(`"alice@example.test"`, `"@example.org"` for a whole domain), merged with `recipients.table`. With either ' +
    'set, other addresses of the local domains are refused at RCPT (`550 5.1.1`). Lowercased on load.'),
  entry('verdicts', 'max_refusals_per_session', 'maxRefusalsPerSession', int(1, 100),
    'Policy refusals (tempfail, reject) in one session after which the session ends with `421 4.7.0`. Refusals ' +
    'belong to the session: RSET and new transactions do not clear them.'),
  entry('state', 'store', 'store', stateStore(),
    'Where policy state shared across sessions lives (verdicts remembered by client network with their TTL). ' +
    '`"sqlite"` keeps it in `state.sqlite` in the spool directory (WAL mode, shared by the worker processes of one ' +
    'machine); a Redis URL shares it between several Portcullis nodes behind a load balancer.'),
  entry('greylist', 'enabled', 'enabled', bool(),
    'Temp-fail the first delivery attempt of each (client network, sender, recipient) triplet; a retry from a new ' +
    'connection after the delay is accepted. Off in the embedded default, on in the sample configuration. Needs the ' +
    'state store (`state.store`). See docs/policy.md.'),
  entry('greylist', 'delay_seconds', 'delaySeconds', int(1, 86_400),
    'How long a new triplet must wait before a retry is accepted (postgrey\'s default, 300 s).'),
  entry('greylist', 'stage', 'stage', oneOf(['rcpt', 'data']),
    '`"rcpt"` temp-fails at RCPT (the usual place); `"data"` temp-fails after the end of data, for all the ' +
    'transaction\'s recipients at once.'),
  entry('verdicts', 'ipv4_prefix', 'ipv4Prefix', int(8, 32),
    'The IPv4 network a policy refusal with a TTL is remembered for across sessions: `24` means a refusal of ' +
    '192.0.2.7 also answers 192.0.2.99 until it expires (senders rotate addresses within their network); `32` ' +
    'remembers it for the one address. Checks whose verdict is about one address (DNS lists) always use /32.'),
  entry('verdicts', 'ipv6_prefix', 'ipv6Prefix', int(16, 128),
    'The IPv6 network a policy refusal with a TTL is remembered for (`64`: one customer network). DNS lists ' +
    'always use /128.'),
  entry('policy', 'checks', 'checks', checkList(),
    'The policy checks, in the order they run at each stage (connect, HELO, MAIL, each RCPT, end of data). A ' +
    'check runs when it is listed here and configured in its own section (`recipients.table` set, `helo` options ' +
    'on, `[[dnsbl]]` tables present, `spf.enabled`, `greylist.enabled`); leaving a name out turns the check off. ' +
    'Relay control (`relay.networks`) always runs first, at RCPT. The first refusal ends a stage; a DNS allow list ' +
    'that accepts skips the checks after it at that stage. See docs/policy.md.'),
  entry('dns', 'servers', 'servers', dnsServers(),
    'The DNS servers the policy checks ask (DNS lists, SPF, HELO names). `[]` uses the system resolver ' +
    '(/etc/resolv.conf). Use a local caching resolver: public resolvers are refused by most DNS lists.'),
  entry('dns', 'timeout_ms', 'timeoutMs', int(100, 30_000),
    'How long the first try of a DNS query waits for an answer; each further try waits twice as long ' +
    '(the resolver library\'s schedule), so an unanswered query gives up after about `timeout_ms` × 2^`tries`. ' +
    'That product may be at most 30000 (30 s), so every check answers well within the session\'s 120 s limit.'),
  entry('dns', 'tries', 'tries', int(1, 5),
    'How many times a DNS query is sent before it counts as unanswered (see `dns.timeout_ms`).'),
  entry('dnslists', 'threshold', 'threshold', int(1, 1000),
    'The score at which a client is refused: the sum of the weights of the `[[dnsbl]]` lists that list its ' +
    'address. With the default weights of 1, one listing refuses.'),
  entry('dnslists', 'allow_threshold', 'allowThreshold', intOrOff(-1000, -1),
    'A score at or below this accepts the client at the DNS list\'s stage, so the checks after it at that stage ' +
    '(greylisting, say) do not run: give an allow list a negative weight. Negative only: an unlisted client scores ' +
    '0. `"off"`: an allow list only offsets block lists.'),
  entry('dnslists', 'stage', 'stage', oneOf(['connect', 'rcpt']),
    '`"rcpt"` refuses a listed client at each RCPT (the reply names the list, and the client\'s sender and ' +
    'recipients appear in the log); `"connect"` refuses it in the greeting (`554`), leaving only QUIT.'),
  entry('dnslists', 'action', 'action', oneOf(['reject', 'tempfail']),
    '`"reject"` answers a listed client `554 5.7.1`; `"tempfail"` answers `450 4.7.1` (at connect `421 4.7.1` and ' +
    'the connection closes: a greeting can only be 220, 554 or 421), for trying a new list without losing mail.'),
  entry('dnslists', 'negative_cache_seconds', 'negativeCacheSeconds', int(0, 3600),
    'How long "not listed" is cached per address and list (listed answers are cached for their DNS TTL).'),
  entry('spf', 'enabled', 'enabled', bool(),
    'Check the sender with SPF (RFC 7208) at MAIL: the MAIL FROM domain, or the HELO name for the null sender ' +
    '`<>`. Evaluated by the mailauth library, with RFC 7208\'s limits of 10 DNS-querying mechanisms and 2 void ' +
    'lookups. Clients in `relay.networks` are not checked.'),
  entry('spf', 'header', 'header', oneOf(['received-spf', 'authentication-results', 'none']),
    'The header field added to accepted mail with the SPF result: `Received-SPF` (RFC 7208 9.1), ' +
    '`Authentication-Results` (RFC 8601), or none.'),
  entry('spf', 'fail', 'fail', oneOf(['continue', 'tempfail', 'reject']),
    'What an SPF `fail` does: `"reject"` answers `550 5.7.23` (RFC 7372), `"tempfail"` `451 4.7.24`, `"continue"` ' +
    'accepts the mail with the result in its header.'),
  entry('spf', 'softfail', 'softfail', oneOf(['continue', 'tempfail', 'reject']),
    'What an SPF `softfail` (`~all`) does.'),
  entry('spf', 'neutral', 'neutral', oneOf(['continue', 'tempfail', 'reject']),
    'What an SPF `neutral` (`?all`) does.'),
  entry('spf', 'none', 'none', oneOf(['continue', 'tempfail', 'reject']),
    'What happens when the domain publishes no SPF record.'),
  entry('spf', 'temperror', 'temperror', oneOf(['continue', 'tempfail', 'reject']),
    'What a temporary DNS failure during the check does (`"tempfail"`: `451 4.7.24`, the client retries later).'),
  entry('spf', 'permerror', 'permerror', oneOf(['continue', 'tempfail', 'reject']),
    'What a broken SPF record (syntax error, more than 10 DNS-querying mechanisms, more than 2 void lookups) does. ' +
    'Many domains publish broken records, hence `"continue"`.'),
  entry('helo', 'require_fqdn', 'requireFqdn', bool(),
    'Refuse (`550 5.7.1`) a HELO/EHLO name that is not a fully-qualified domain name (a bare word like ' +
    '`localhost` or `PC-1234`) or an address literal. Off by default: broken clients and proxies exist.'),
  entry('helo', 'require_resolvable', 'requireResolvable', bool(),
    'Refuse (`550 5.7.1`) a HELO/EHLO domain name that has no A, AAAA or MX record (a DNS failure answers ' +
    '`450 4.7.1`). Address literals are not looked up.'),
  entry('helo', 'reject_our_name', 'rejectOurName', bool(),
    'Refuse (`550 5.7.1`) a client that announces our own `smtp.hostname`, a local domain, or our own address ' +
    'as a literal: a forgery no honest client makes.'),
  entry('metrics', 'listen', 'listen', optionalListen(),
    'Serve Prometheus metrics over HTTP at `/metrics` on this address (from the main process, summed over the ' +
    'workers). Keep it on loopback or a management network. `""`: no metrics endpoint.'),
  entry('log', 'level', 'level', oneOf(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']),
    'The least severe log level written; `"silent"` writes nothing.'),
  entry('log', 'format', 'format', oneOf(['auto', 'json', 'pretty']),
    '`"json"` writes one JSON object per line (for files and log shippers); `"pretty"` writes one human line per ' +
    'event with its time, level, session id, queue id and message; `"auto"` is pretty when standard output is a ' +
    'terminal and JSON otherwise.'),
];

const KEYS_BY_PATH = new Map(CONFIG_KEYS.map((k) => [k.path, k]));

/** One key of a `[[dnsbl]]` table (an array of tables: each table is one DNS list). */
export type ListKey = {
  /** Documented path, e.g. "dnsbl[].zone". */
  readonly path: string;
  readonly key: string;
  readonly field: keyof DnsListConfig;
  readonly type: string;
  readonly allowed: string;
  /** `undefined` for a key every table must set. */
  readonly defaultToml: string | undefined;
  readonly doc: string;
  readonly check: (value: unknown, path: string) => Checked<unknown>;
};

function listKey<F extends keyof DnsListConfig>(
  key: string, field: F, validator: Validator<DnsListConfig[F]>, fallback: DnsListConfig[F] | undefined, doc: string,
): ListKey {
  return {
    path: `dnsbl[].${key}`, key, field, type: validator.type, allowed: validator.allowed,
    defaultToml: fallback === undefined ? undefined : validator.toToml(fallback), doc,
    check: (value, path) => validator.check(value, path),
  };
}

export const DNSBL_KEYS: readonly ListKey[] = [
  listKey('zone', 'zone', dnsListZone(), undefined,
    'The DNS list\'s zone, e.g. `"zen.example"`: a client 192.0.2.1 is looked up as `1.2.0.192.zen.example` ' +
    '(IPv6: 32 reversed nibbles). Required. A zone may appear in several tables with different `answers` and ' +
    'weights (the trust levels of an allow list); it is still asked once per client.'),
  listKey('weight', 'weight', weight(), 1,
    'What a listing adds to the client\'s score (`dnslists.threshold` refuses). Negative for an allow list ' +
    '(a DNSWL): its listing offsets block lists, or accepts with `dnslists.allow_threshold`.'),
  listKey('answers', 'answers', answerPatterns(), [],
    'Which A answers count as listed, e.g. `["127.0.0.[2..11]"]` or `["127.0.0.2", "127.0.0.[4;9]"]`. `[]`: any ' +
    'answer in 127.0.0.0/8 except 127.255.255.0/24, which lists such as Spamhaus use for "query refused" errors ' +
    'and which never counts.'),
];

const DNSBL_KEYS_BY_NAME = new Map(DNSBL_KEYS.map((k) => [k.key, k]));

/** `[[dnsbl]]` tables -> DnsListConfig[], with each problem named by its index ("dnsbl[1].weight"). */
function parseDnsLists(value: unknown, problems: string[]): DnsListConfig[] {
  if (!Array.isArray(value) || !value.every(isTable)) {
    problems.push(`dnsbl = ${show(value)}: must be tables: write each list under its own [[dnsbl]] header`);
    return [];
  }
  const lists: DnsListConfig[] = [];
  const zones = new Map<string, number>();
  value.forEach((table, i) => {
    const list: Partial<DnsListConfig> = { weight: 1, answers: [] };
    let isValid = true;
    for (const [key, item] of Object.entries(table)) {
      const spec = DNSBL_KEYS_BY_NAME.get(key);
      if (spec === undefined) {
        const near = closest(key, DNSBL_KEYS.map((k) => k.key));
        problems.push(`unknown key "dnsbl[${i}].${key}"${near === undefined ? '' : ` (did you mean "dnsbl[${i}].${near}"?)`}`);
        isValid = false;
        continue;
      }
      const checked = spec.check(item, `dnsbl[${i}].${key}`);
      if (checked.ok) (list as Record<string, unknown>)[spec.field] = checked.value;
      else {
        problems.push(...checked.problems);
        isValid = false;
      }
    }
    if (list.zone === undefined) {
      if (!('zone' in table)) problems.push(`dnsbl[${i}]: zone must be set, e.g. zone = "zen.example"`);
      return;
    }
    list.zone = list.zone.toLowerCase();
    // A zone may appear again with other answers and weight (trust levels of one allow list);
    // the same zone with the same answers would count one listing twice.
    const id = `${list.zone} ${JSON.stringify(list.answers ?? [])}`;
    const first = zones.get(id);
    if (first !== undefined) {
      problems.push(`dnsbl[${i}].zone = ${show(list.zone)}: already listed with the same answers as dnsbl[${first}]`);
      return;
    }
    zones.set(id, i);
    if (isValid) lists.push(list as DnsListConfig);
  });
  return lists;
}



// ---------------------------------------------------------------------------------------------
// Suggestions for unknown names.

/** Optimal string alignment distance: Levenshtein plus adjacent transpositions ("listne" -> "listen" is 1). */
function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    rows.push([i]);
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        rows[i].push(j);
        continue;
      }
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2][j - 2] + 1);
      rows[i].push(d);
    }
  }
  return rows[a.length][b.length];
}

/** Folds case and separators, so maxMessageBytes and max-message-bytes both find max_message_bytes. */
function fold(name: string): string {
  return name.toLowerCase().replace(/[-_]/g, '');
}

function closest(name: string, candidates: readonly string[]): string | undefined {
  const folded = fold(name);
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(folded.length / 3)) + 1;
  for (const candidate of candidates) {
    const distance = editDistance(folded, fold(candidate));
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return best;
}

function suggestKey(section: string | undefined, key: string): string | undefined {
  if (section !== undefined) {
    const near = closest(key, CONFIG_KEYS.filter((k) => k.section === section).map((k) => k.key));
    if (near !== undefined) return `${section}.${near}`;
  }
  // The right key in the wrong place: `cert` under [smtp], or `hostname` above every [section].
  const elsewhere = CONFIG_KEYS.filter((k) => fold(k.key) === fold(key));
  return elsewhere.length === 1 ? elsewhere[0].path : undefined;
}

function unknownKey(section: string | undefined, key: string): string {
  const path = section === undefined ? key : `${section}.${key}`;
  const suggestion = suggestKey(section, key);
  return `unknown key "${path}"${suggestion === undefined ? '' : ` (did you mean "${suggestion}"?)`}`;
}

function unknownSection(name: string): string {
  const suggestion = closest(name, SECTIONS);
  return `unknown section "[${name}]"${suggestion === undefined ? '' : ` (did you mean "[${suggestion}]"?)`}`;
}

// ---------------------------------------------------------------------------------------------
// Parsing and loading.

function isSection(name: string): name is SectionName {
  return (SECTIONS as readonly string[]).includes(name);
}

function syntaxProblem(err: TomlError): string {
  // smol-toml's message is a headline, a blank line and a code excerpt; the problem is one line.
  const headline = err.message.split('\n')[0].replace(/^Invalid TOML document:\s*/, '');
  return `TOML syntax error at line ${err.line}, column ${err.column}: ${headline}`;
}

/** The longest an unanswered DNS query may take (see crossProblems). */
export const MAX_DNS_WAIT_MS = 30_000;

/** Checks that involve two keys; run only when both keys were themselves valid. */
function crossProblems(config: Config, invalid: ReadonlySet<string>): string[] {
  const problems: string[] = [];
  const { certFile, keyFile } = config.tls;
  if (!invalid.has('tls.cert') && !invalid.has('tls.key') && (certFile === '') !== (keyFile === '')) {
    const [given, missing, value] = certFile === '' ? ['tls.key', 'tls.cert', keyFile] : ['tls.cert', 'tls.key', certFile];
    problems.push(`${given} = ${show(value)}: ${missing} must be set too (set both or neither)`);
  }
  const { journalMaxMessageBytes, segmentMaxBytes } = config.spool;
  if (
    !invalid.has('spool.journal_max_message_bytes') &&
    !invalid.has('spool.segment_max_bytes') &&
    journalMaxMessageBytes > segmentMaxBytes
  ) {
    problems.push(
      `spool.journal_max_message_bytes = ${journalMaxMessageBytes}: must not exceed spool.segment_max_bytes (${segmentMaxBytes})`,
    );
  }
  // A DNS query that never gets an answer takes about timeout_ms x 2^tries (c-ares doubles the wait
  // at each try); the checks must answer well within the session's 120 s limit on any action.
  if (!invalid.has('dns.timeout_ms') && !invalid.has('dns.tries')) {
    const worstMs = config.dns.timeoutMs * 2 ** config.dns.tries;
    if (worstMs > MAX_DNS_WAIT_MS) {
      problems.push(
        `dns.timeout_ms = ${config.dns.timeoutMs}, dns.tries = ${config.dns.tries}: an unanswered query would wait about ` +
          `${worstMs} ms (each try waits twice as long as the one before); keep timeout_ms x 2^tries at most ${MAX_DNS_WAIT_MS}`,
      );
    }
  }
  // A check configured in its own section but left out of policy.checks would silently not run.
  if (!invalid.has('policy.checks')) {
    const listed = new Set(config.policy.checks);
    const wanted: [PolicyCheckName, boolean, string][] = [
      ['recipients', config.recipients.table !== '' || config.recipients.addresses.length > 0, 'recipients.table or recipients.addresses is set'],
      ['greylist', config.greylist.enabled, 'greylist.enabled = true'],
      ['spf', config.spf.enabled, 'spf.enabled = true'],
      ['dnsbl', config.dnsbl.length > 0, '[[dnsbl]] tables are present'],
      ['helo', config.helo.requireFqdn || config.helo.requireResolvable || config.helo.rejectOurName, 'a helo option is on'],
    ];
    for (const [name, isOn, why] of wanted) {
      if (isOn && !listed.has(name)) problems.push(`policy.checks = ${show(config.policy.checks)}: ${why}, so list "${name}" too (or turn it off)`);
    }
  }
  return problems;
}

/**
 * TOML text -> validated Config. Keys the text leaves out take their value from defaultConfig().
 * Paths are returned as written; loadConfig resolves them. Throws ConfigError listing every problem.
 */
export function parseConfig(text: string, source: string): Config {
  let document: Record<string, unknown>;
  try {
    // A byte order mark is not TOML, but editors on some systems write one.
    document = parse(text.replace(/^\uFEFF/, ''));
  } catch (err) {
    if (err instanceof TomlError) throw new ConfigError(source, [syntaxProblem(err)]);
    throw err;
  }

  const config = defaultConfig();
  const problems: string[] = [];
  const invalid = new Set<string>();
  for (const [name, sectionValue] of Object.entries(document)) {
    if (name === 'dnsbl') {
      config.dnsbl = parseDnsLists(sectionValue, problems);
      continue;
    }
    if (!isSection(name)) {
      problems.push(isTable(sectionValue) ? unknownSection(name) : unknownKey(undefined, name));
      continue;
    }
    if (!isTable(sectionValue)) {
      problems.push(`${name} = ${show(sectionValue)}: must be a table: write the keys under a [${name}] header`);
      continue;
    }
    for (const [key, value] of Object.entries(sectionValue)) {
      const spec = KEYS_BY_PATH.get(`${name}.${key}`);
      if (spec === undefined) {
        problems.push(unknownKey(name, key));
        continue;
      }
      const checked = spec.check(value, spec.path);
      if (checked.ok) {
        (config[spec.section] as Record<string, unknown>)[spec.field] = checked.value;
      } else {
        invalid.add(spec.path);
        problems.push(...checked.problems);
      }
    }
  }
  problems.push(...crossProblems(config, invalid));
  if (problems.length > 0) throw new ConfigError(source, problems);
  return config;
}

/** A configuration file is a few kilobytes; this bound keeps a wrong path (a log, a device) from being slurped. */
const MAX_CONFIG_FILE_BYTES = 2 ** 20;

function readConfigText(file: string, shownAs: string): string {
  let bytes: Buffer;
  try {
    const stat = statSync(file);
    if (!stat.isFile()) throw new ConfigError(shownAs, [`cannot read "${shownAs}": not a regular file`]);
    if (stat.size > MAX_CONFIG_FILE_BYTES) {
      throw new ConfigError(shownAs, [`cannot read "${shownAs}": larger than ${bytesText(MAX_CONFIG_FILE_BYTES)}`]);
    }
    bytes = readFileSync(file);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(shownAs, [`cannot read "${shownAs}": ${(err as Error).message}`]);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    // TOML 1.0 section 1: a TOML file must be valid UTF-8.
    throw new ConfigError(shownAs, [`cannot read "${shownAs}": not valid UTF-8`]);
  }
}

/** Pins relative paths to the directory the server was started from, so a later chdir or a worker cannot move them. */
function resolvePaths(config: Config, cwd: string): Config {
  const pin = (path: string) => (path === '' ? path : resolve(cwd, path));
  config.spool.dir = pin(config.spool.dir);
  config.tls.certFile = pin(config.tls.certFile);
  config.tls.keyFile = pin(config.tls.keyFile);
  config.recipients.table = pin(config.recipients.table);
  return config;
}

/**
 * Reads and validates the file at `path`, or takes the embedded default when `path` is undefined.
 * Relative paths (the file itself, spool.dir, tls.cert, tls.key) are resolved against `options.cwd`,
 * which defaults to process.cwd(). Throws ConfigError.
 */
export function loadConfig(path?: string, options: { cwd?: string } = {}): Config {
  const cwd = options.cwd ?? process.cwd();
  const config = path === undefined ? defaultConfig() : parseConfig(readConfigText(resolve(cwd, path), path), path);
  return resolvePaths(config, cwd);
}
