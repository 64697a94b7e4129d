// The [routes] and [aliases] sections: where mail for each domain goes, and which addresses are
// rewritten to others before routing. Both are tables whose keys the operator names (domains,
// addresses), so each has its own parser (every problem into `problems`, with suggestions);
// `routes.default` and `routes.local` are also ConfigKeys, for their documentation and default.
// Pure: never resolves a host name and never touches a Maildir. Route grammar: docs/delivery.md.

import type { Route, TlsPolicy } from '../../delivery/types.ts';
import { expandAliases, MAX_ALIAS_DEPTH, MAX_ALIAS_EXPANSION } from '../../delivery/router.ts';
import { ipFamily } from '../../net/ip.ts';
import { keyTable, type ConfigKey } from '../keys.ts';
import { closest } from '../suggest.ts';
import { defaultConfig, type Config, type RoutesConfig } from '../types.ts';
import { fail, isTable, ok, show, typeName, type Checked, type Validator } from '../validators.ts';
import { domainProblem } from '../values.ts';

/** The keys of [routes] that are not domains. */
export const ROUTE_WORDS = ['default', 'local'] as const;
const SCHEMES = ['mx', 'refuse', 'discard', 'smtp:', 'lmtp:', 'maildir:'];
const TLS_POLICIES: readonly TlsPolicy[] = ['opportunistic', 'required', 'none'];
const ROUTE_TABLE_KEYS = ['via', 'tls'];
const EXAMPLES = '"mx", "smtp:[relay.example]:587", "lmtp:127.0.0.1:24", "lmtp:/run/dovecot/lmtp", "maildir:var/maildir", "discard" or "refuse"';

/** `host`, `[host]`, with an optional `:port`; IPv6 only in brackets. */
function parseHostPort(text: string, defaultPort: number | null): { host: string; port: number } | string {
  let host: string;
  let portText: string | null = null;
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  if (bracketed !== null) {
    host = bracketed[1];
    portText = bracketed[2] ?? null;
  } else if (text.startsWith('[')) {
    return `"${text}" has no closing "]"`;
  } else {
    const colon = text.indexOf(':');
    if (colon >= 0 && text.indexOf(':', colon + 1) >= 0) return `an IPv6 address goes in brackets, e.g. "[2001:db8::1]:25"`;
    host = colon < 0 ? text : text.slice(0, colon);
    portText = colon < 0 ? null : text.slice(colon + 1);
  }
  if (host === '') return 'has no host';
  if (ipFamily(host) === 0) {
    const problem = domainProblem(host);
    if (problem !== undefined) return `host "${host}" is not an IP address or host name: ${problem}`;
    host = host.toLowerCase();
  } else if (bracketed === null && ipFamily(host) === 6) {
    return 'an IPv6 address goes in brackets';
  }
  if (portText === null) {
    if (defaultPort === null) return `needs a port, e.g. "${host}:24" (LMTP has no standard port)`;
    return { host, port: defaultPort };
  }
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) return `port "${portText}" must be an integer from 1 to 65535`;
  return { host, port };
}

/** A route written as text ("smtp:[relay.example]:587") -> Route (tls opportunistic), or why not. */
export function parseRoute(text: string): Route | string {
  if (text === 'mx') return { kind: 'mx', tls: 'opportunistic' };
  if (text === 'refuse') return { kind: 'refuse' };
  if (text === 'discard') return { kind: 'discard' };
  const colon = text.indexOf(':');
  const scheme = colon < 0 ? text : text.slice(0, colon + 1);
  const rest = colon < 0 ? '' : text.slice(colon + 1);
  // Security: a NUL or a line end in a host or path would not be the name the OS or a peer sees.
  if (/[\x00-\x1f\x7f]/.test(text)) return 'must not contain control characters';
  switch (scheme) {
    case 'mx:':
      return `"mx" takes no argument (it looks up the recipient's domain); for a fixed next hop write "smtp:[${rest || 'relay.example'}]:25"`;
    case 'smtp:': {
      const hp = parseHostPort(rest, 25);
      return typeof hp === 'string' ? `"${text}": ${hp}` : { kind: 'smtp', host: hp.host, port: hp.port, tls: 'opportunistic' };
    }
    case 'lmtp:': {
      if (rest.startsWith('unix:')) return rest.length > 5 ? { kind: 'lmtp', socket: rest.slice(5) } : `"${text}": has no socket path`;
      if (rest.startsWith('/') || rest.startsWith('./') || rest.startsWith('../')) return { kind: 'lmtp', socket: rest };
      const hp = parseHostPort(rest, null);
      return typeof hp === 'string' ? `"${text}": ${hp}` : { kind: 'lmtp', host: hp.host, port: hp.port };
    }
    case 'maildir:':
      return rest === '' ? `"${text}": has no directory, e.g. "maildir:var/maildir"` : { kind: 'maildir', path: rest };
  }
  const lower = text.toLowerCase();
  if (lower !== text && typeof parseRoute(lower) !== 'string') return `write it in lower case: "${lower}"`;
  // Postfix habits: relay:, local:, virtual:, error: are transports there, not here.
  const hints: Record<string, string> = {
    'relay:': 'smtp:', 'esmtp:': 'smtp:', 'local:': 'maildir:', 'virtual:': 'maildir:', 'error:': 'refuse', 'error': 'refuse',
    'discard:': 'discard', 'reject': 'refuse', 'local': 'maildir:PATH', 'lmtp': 'lmtp:HOST:PORT', 'smtp': 'smtp:[HOST]:PORT',
  };
  const near = hints[scheme.toLowerCase()] ?? closest(scheme.replace(/:$/, ''), SCHEMES.map((s) => s.replace(/:$/, '')));
  return `is not a route: write ${EXAMPLES}${near === undefined ? '' : ` (did you mean "${near}${near.endsWith(':') ? '…' : ''}"?)`}`;
}

/** A route as the operator writes it: a string, or { via = "...", tls = "required" }. */
export function routeValue(): Validator<Route> {
  return {
    type: 'string or inline table',
    allowed: `${EXAMPLES.replace(/"([^"]+)"/g, '`"$1"`')}; or \`{ via = "...", tls = "required" }\` (tls: \`"opportunistic"\`, \`"required"\` or \`"none"\`, for \`mx\` and \`smtp:\` routes)`,
    check(value, path) {
      if (typeof value === 'string') {
        const route = parseRoute(value);
        return typeof route === 'string' ? fail(path, value, route) : ok(route);
      }
      if (!isTable(value)) return fail(path, value, `must be a string such as ${EXAMPLES}, or a table { via = "...", tls = "..." }, not ${typeName(value)}`);
      const problems: string[] = [];
      for (const key of Object.keys(value)) {
        if (ROUTE_TABLE_KEYS.includes(key)) continue;
        const near = closest(key, ROUTE_TABLE_KEYS);
        problems.push(`unknown key "${path}.${key}"${near === undefined ? '' : ` (did you mean "${path}.${near}"?)`}`);
      }
      let route: Route | null = null;
      if (!('via' in value)) problems.push(`${path}: via must be set, e.g. { via = "smtp:[relay.example]:587", tls = "required" }`);
      else if (typeof value.via !== 'string') problems.push(`${path}.via = ${show(value.via)}: must be a string such as ${EXAMPLES}`);
      else {
        const parsed = parseRoute(value.via);
        if (typeof parsed === 'string') problems.push(`${path}.via = ${show(value.via)}: ${parsed}`);
        else route = parsed;
      }
      if ('tls' in value) {
        const tls = value.tls;
        if (typeof tls !== 'string' || !(TLS_POLICIES as readonly string[]).includes(tls)) {
          const near = typeof tls === 'string' ? closest(tls, TLS_POLICIES) : undefined;
          problems.push(`${path}.tls = ${show(tls)}: must be one of "opportunistic", "required", "none"${near === undefined ? '' : ` (did you mean "${near}"?)`}`);
        } else if (route !== null) {
          if (route.kind === 'mx' || route.kind === 'smtp') route = { ...route, tls: tls as TlsPolicy };
          else problems.push(`${path}.tls = ${show(tls)}: only "mx" and "smtp:" routes use TLS; remove tls from this ${route.kind} route`);
        }
      }
      return problems.length > 0 || route === null ? { ok: false, problems } : ok(route);
    },
    toToml: formatRouteToml,
  };
}

/** A Route as its text ("smtp:[relay.example]:587"), the inverse of parseRoute (tls aside). */
export function formatRoute(route: Route): string {
  switch (route.kind) {
    case 'mx':
    case 'refuse':
    case 'discard':
      return route.kind;
    case 'smtp':
      return `smtp:[${route.host}]:${route.port}`;
    case 'lmtp':
      return 'socket' in route ? `lmtp:${route.socket.startsWith('/') || route.socket.startsWith('.') ? '' : 'unix:'}${route.socket}` : `lmtp:${ipFamily(route.host) === 6 ? `[${route.host}]` : route.host}:${route.port}`;
    case 'maildir':
      return `maildir:${route.path}`;
  }
}

export function formatRouteToml(route: Route): string {
  const text = JSON.stringify(formatRoute(route));
  return 'tls' in route && route.tls !== 'opportunistic' ? `{ via = ${text}, tls = "${route.tls}" }` : text;
}

const entry = keyTable(defaultConfig());

export const ROUTES_KEYS: readonly ConfigKey[] = [
  entry('routes', 'default', 'default', routeValue(),
    'Where mail for a domain that is not in `domains.local` and has no entry of its own goes: mail relayed for ' +
    'clients in `relay.networks`. `"refuse"` (the default) delivers nothing off this host: such mail fails at ' +
    'delivery with `5.4.4`, so set `"mx"` (RFC 5321 5.1) or a smarthost such as `"smtp:[relay.example]:587"` ' +
    'before relaying. See docs/delivery.md for every route form.'),
  entry('routes', 'local', 'local', routeValue(),
    'Where mail for each domain in `domains.local` without an entry of its own goes (and for the bare ' +
    '`Postmaster`, RFC 5321 4.5.1). The default stores it in Maildirs under `var/maildir`, one per recipient ' +
    '(`var/maildir/alice@example.test/`), so the embedded configuration delivers what it accepts. A relative ' +
    'Maildir path or LMTP socket is resolved against the working directory. Must not be `"refuse"` while ' +
    '`domains.local` lists a domain that uses it: refuse such mail at RCPT instead, by leaving the domain out.'),
];

/** TOML `example.com = "..."` without quotes is a dotted key: the table { example = { com = ... } }. */
function dottedKeyHint(key: string, value: unknown): string | undefined {
  const parts: string[] = [key];
  let at: unknown = value;
  while (isTable(at) && !('via' in at) && Object.keys(at).length === 1) {
    const [k, v] = Object.entries(at)[0];
    parts.push(k);
    at = v;
  }
  return parts.length > 1 ? `"${parts.join('.')}"` : undefined;
}

/** The [routes] table -> RoutesConfig; each problem named by its key. */
export function parseRoutes(value: unknown, problems: string[]): RoutesConfig {
  const routes = defaultConfig().routes;
  if (!isTable(value)) {
    problems.push(`routes = ${show(value)}: must be a table: write the routes under a [routes] header`);
    return routes;
  }
  const validator = routeValue();
  const seen = new Map<string, string>();
  for (const [key, item] of Object.entries(value)) {
    const path = /^[A-Za-z0-9_-]+$/.test(key) ? `routes.${key}` : `routes."${key}"`;
    if ((ROUTE_WORDS as readonly string[]).includes(key)) {
      const checked = validator.check(item, path);
      if (checked.ok) routes[key as 'default' | 'local'] = checked.value;
      else problems.push(...checked.problems);
      continue;
    }
    const dotted = dottedKeyHint(key, item);
    if (dotted !== undefined) {
      problems.push(`routes.${key} = ${show(item)}: a domain with dots must be quoted: write ${dotted} = ... (TOML reads an unquoted dotted key as nested tables)`);
      continue;
    }
    const near = closest(key, ROUTE_WORDS);
    const problem = domainProblem(key);
    if (problem !== undefined) {
      problems.push(`${path}: not a domain (${problem})${near === undefined ? '' : `; did you mean "routes.${near}"?`}`);
      continue;
    }
    if (near !== undefined && !key.includes('.')) {
      // A one-label domain next to a key word is far more likely a typo than a real domain.
      problems.push(`unknown key "${path}" (did you mean "routes.${near}"?)`);
      continue;
    }
    const domain = key.toLowerCase();
    const first = seen.get(domain);
    if (first !== undefined) {
      problems.push(`${path}: same domain as ${first} (domains compare case-insensitively)`);
      continue;
    }
    seen.set(domain, path);
    const checked = validator.check(item, path);
    if (checked.ok) routes.domains[domain] = checked.value;
    else problems.push(...checked.problems);
  }
  return routes;
}

/** `local@domain`, the domain a valid host name (lowercased); the local part kept as written. */
function aliasAddress(value: unknown, path: string): Checked<string> {
  if (typeof value !== 'string') return fail(path, value, `must be an address string, not ${typeName(value)}`);
  const at = value.lastIndexOf('@');
  if (/[\s\x00-\x1f\x7f<>]/.test(value) || at <= 0 || at === value.length - 1) {
    return fail(path, value, 'must be an address "local@domain", without angle brackets');
  }
  const domain = value.slice(at + 1);
  const problem = domainProblem(domain);
  if (problem !== undefined) return fail(path, value, `domain "${domain}" ${problem}`);
  return ok(`${value.slice(0, at)}@${domain.toLowerCase()}`);
}

/** The [aliases] table -> address (lowercased) -> targets; loops and depth are checked in aliasProblems. */
export function parseAliases(value: unknown, problems: string[]): Record<string, string[]> {
  const aliases: Record<string, string[]> = {};
  if (!isTable(value)) {
    problems.push(`aliases = ${show(value)}: must be a table: write "alice@example.test" = "bob@example.test" under an [aliases] header`);
    return aliases;
  }
  const seen = new Map<string, string>();
  for (const [key, item] of Object.entries(value)) {
    const path = `aliases."${key}"`;
    if (isTable(item)) {
      problems.push(`aliases.${key} = ${show(item)}: an address must be quoted: write "${key}.${Object.keys(item)[0] ?? ''}…" = "..." (TOML reads an unquoted dotted key as nested tables)`);
      continue;
    }
    const source = aliasAddress(key, path);
    if (!source.ok) {
      problems.push(`${path}: the key must be an address "local@domain"`);
      continue;
    }
    const id = source.value.toLowerCase();
    const first = seen.get(id);
    if (first !== undefined) {
      problems.push(`${path}: same address as ${first} (addresses are compared case-insensitively here)`);
      continue;
    }
    seen.set(id, path);
    const items = typeof item === 'string' ? [item] : item;
    if (!Array.isArray(items) || items.length === 0) {
      problems.push(`${path} = ${show(item)}: must be an address or a non-empty list of addresses, e.g. "bob@example.test" or ["bob@example.test", "carol@example.test"]`);
      continue;
    }
    const targets: string[] = [];
    let isValid = true;
    items.forEach((t, i) => {
      const checked = aliasAddress(t, typeof item === 'string' ? path : `${path}[${i}]`);
      if (checked.ok) {
        if (!targets.some((x) => x.toLowerCase() === checked.value.toLowerCase())) targets.push(checked.value);
      } else {
        problems.push(...checked.problems);
        isValid = false;
      }
    });
    if (isValid) aliases[id] = targets;
  }
  return aliases;
}

/** Checks across [routes], [aliases] and [domains]: run after every section is read, each only
 *  when what it reads was itself valid (one mistake, one problem). */
export function routeProblems(config: Config, invalid: ReadonlySet<string>): string[] {
  const problems: string[] = [];
  const { routes } = config;
  if (!invalid.has('domains.local') && !invalid.has('routes')) {
    for (const domain of config.domains.local) {
      const own = routes.domains[domain];
      const route = own ?? routes.local;
      if (route.kind === 'refuse') {
        const where = own !== undefined ? `routes."${domain}"` : 'routes.local';
        problems.push(
          `${where} = "refuse": domains.local lists "${domain}", so its mail would be accepted and then bounced; ` +
            `give it a delivering route, or leave it out of domains.local to refuse it at RCPT`,
        );
      }
    }
  }
  const expanded = invalid.has('aliases') ? { ok: true as const } : expandAliases(config.aliases);
  if (!expanded.ok) {
    for (const p of expanded.problems) {
      problems.push(
        p.kind === 'loop'
          ? `aliases."${p.address}": loops back to itself through ${p.path.map((a) => `"${a}"`).join(' -> ')} (an alias may list itself only directly, to keep a copy)`
          : p.kind === 'depth'
            ? `aliases."${p.address}": expands through more than ${MAX_ALIAS_DEPTH} aliases (${p.path.map((a) => `"${a}"`).join(' -> ')}); point it at the final addresses`
            : `aliases."${p.address}": expands to more than ${MAX_ALIAS_EXPANSION} addresses; use a mailing list instead`,
      );
    }
  }
  return problems;
}

/** Relative Maildir paths and LMTP sockets, pinned to the directory the server was started from. */
export function resolveRoutePaths(routes: RoutesConfig, resolve: (p: string) => string): void {
  const pin = (route: Route): Route =>
    route.kind === 'maildir' ? { ...route, path: resolve(route.path) } : route.kind === 'lmtp' && 'socket' in route ? { ...route, socket: resolve(route.socket) } : route;
  routes.default = pin(routes.default);
  routes.local = pin(routes.local);
  for (const [domain, route] of Object.entries(routes.domains)) routes.domains[domain] = pin(route);
}
