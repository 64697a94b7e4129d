// Routing: recipient address -> where it goes (the [routes] table), alias expansion ([aliases],
// Postfix virtual_alias_maps in its simplest form), and the grouping of one message's recipients
// into one delivery job per destination. Pure: no DNS (mx.ts resolves "mx" destinations), no
// files, no clock. Never expands an alias past MAX_ALIAS_DEPTH or MAX_ALIAS_EXPANSION: the
// configuration refuses such tables at load (expandAliases), so a running router never loops.
// RFC 5321 2.3.5 (domains), 4.5.1 (Postmaster), 5.1 (address literals), RFC 3461 4.2 (ORCPT).

import { DELIVERY_REPLY } from '../protocol/replies.ts';
import type { DeliveryRecipient, DeliveryReply, RecipientResult, Route } from './types.ts';

/** Aliases expand through at most this many levels (Postfix: virtual_alias_recursion_limit). */
export const MAX_ALIAS_DEPTH = 10;
/** One address expands to at most this many (Postfix: virtual_alias_expansion_limit). */
export const MAX_ALIAS_EXPANSION = 1000;

export type RouterOptions = {
  routes: { default: Route; local: Route; domains: Readonly<Record<string, Route>> };
  /** address (lowercased) -> targets, as in Config.aliases. */
  aliases: Readonly<Record<string, readonly string[]>>;
  /** domains.local, lowercased. */
  localDomains: readonly string[];
  /** smtp.hostname: the domain of the bare Postmaster (RFC 5321 4.5.1). */
  hostname: string;
};

/** Where one address goes. `key` names the destination: recipients with the same key share a
 *  delivery job (one connection, one transaction), e.g. "mx:example.org", "lmtp:127.0.0.1:24". */
export type Destination = { key: string; route: Route; domain: string };

export type AliasProblem =
  | { kind: 'loop'; address: string; path: string[] }
  | { kind: 'depth'; address: string; path: string[] }
  | { kind: 'expansion'; address: string };

/**
 * Every alias expanded to its final addresses, or what is wrong with the table. An alias that
 * lists itself keeps a copy for itself (Postfix virtual(5)); any other way back to an address
 * already on the path is a loop.
 */
export function expandAliases(
  aliases: Readonly<Record<string, readonly string[]>>,
): { ok: true; expanded: Map<string, string[]> } | { ok: false; problems: AliasProblem[] } {
  const expanded = new Map<string, string[]>();
  const problems: AliasProblem[] = [];
  const failed = new Set<string>();
  const expand = (address: string, path: string[]): string[] | null => {
    const id = address.toLowerCase();
    const targets = aliases[id];
    if (targets === undefined) return [address];
    const done = expanded.get(id);
    if (done !== undefined) return done;
    const out: string[] = [];
    const seen = new Set<string>();
    const add = (a: string): void => {
      if (!seen.has(a.toLowerCase())) {
        seen.add(a.toLowerCase());
        out.push(a);
      }
    };
    for (const target of targets) {
      const tid = target.toLowerCase();
      if (tid === id) {
        add(target);
        continue;
      }
      if (path.includes(tid)) {
        // Named from where the cycle starts: an alias that only leads into it is not the loop.
        problems.push({ kind: 'loop', address: tid, path: [...path.slice(path.indexOf(tid)), tid] });
        return null;
      }
      if (aliases[tid] !== undefined && path.length >= MAX_ALIAS_DEPTH) {
        problems.push({ kind: 'depth', address: path[0], path: [...path, tid] });
        return null;
      }
      const sub = expand(target, [...path, tid]);
      if (sub === null) return null;
      for (const a of sub) add(a);
      if (out.length > MAX_ALIAS_EXPANSION) {
        problems.push({ kind: 'expansion', address: path[0] });
        return null;
      }
    }
    expanded.set(id, out);
    return out;
  };
  for (const id of Object.keys(aliases)) {
    if (failed.has(id) || expanded.has(id)) continue;
    if (expand(id, [id]) === null) failed.add(id);
  }
  // One problem per root cause: a loop a -> b -> a is reported once, from where it was met first,
  // not again from b (nor from an alias that leads into it).
  const causeOf = (p: AliasProblem): string => {
    if (p.kind !== 'loop') return JSON.stringify(p);
    const back = p.path.at(-1)!;
    return `loop ${[...new Set(p.path.slice(p.path.indexOf(back)))].sort().join(' ')}`;
  };
  const causes = problems.map(causeOf);
  const unique = problems.filter((p, i) => causes.indexOf(causes[i]) === i);
  return unique.length === 0 ? { ok: true, expanded } : { ok: false, problems: unique };
}

/** A recipient after alias expansion: `index` is still the envelope's recipient it came from. */
export type ExpandedRecipient = DeliveryRecipient & {
  /** The envelope address it was expanded from (the same address when no alias applied). */
  original: string;
};

/** What routing decided for one message: a job per destination, and the recipients it refuses. */
export type RoutedMessage = {
  jobs: { destination: Destination; recipients: ExpandedRecipient[] }[];
  /** Recipients whose route is "refuse", each with its failure result (no attempt is made). */
  refused: { recipient: ExpandedRecipient; result: RecipientResult }[];
};

/** 5.4.4: RFC 3463 "unable to route": the routing table has no delivering route for the domain. */
export const REFUSED_REPLY: DeliveryReply = DELIVERY_REPLY.routeRefused;

export class Router {
  readonly #opts: RouterOptions;
  readonly #local: ReadonlySet<string>;
  readonly #aliases: Map<string, string[]>;

  constructor(opts: RouterOptions) {
    const expanded = expandAliases(opts.aliases);
    // The configuration loader refuses such tables; reaching this is our bug.
    if (!expanded.ok) throw new Error(`alias table does not expand: ${JSON.stringify(expanded.problems[0])}`);
    this.#opts = opts;
    this.#local = new Set(opts.localDomains.map((d) => d.toLowerCase()));
    this.#aliases = expanded.expanded;
  }

  /** The bare Postmaster gets our host name (RFC 5321 4.5.1); other addresses stay as they are. */
  #qualify(address: string): string {
    return address.toLowerCase() === 'postmaster' ? `postmaster@${this.#opts.hostname.toLowerCase()}` : address;
  }

  /** The addresses one address is delivered to: itself, or its alias's expansion. */
  expand(address: string): string[] {
    const qualified = this.#qualify(address);
    return this.#aliases.get(qualified.toLowerCase()) ?? [qualified];
  }

  /** Whether the address's domain is one of domains.local. */
  isLocal(address: string): boolean {
    return this.#local.has(domainOf(this.#qualify(address)));
  }

  /** Where one (expanded) address goes. */
  route(address: string): Destination {
    const qualified = this.#qualify(address);
    const domain = domainOf(qualified);
    const isPostmaster = address.toLowerCase() === 'postmaster';
    const own = this.#opts.routes.domains[domain];
    const route = own ?? (isPostmaster || this.#local.has(domain) ? this.#opts.routes.local : this.#opts.routes.default);
    return { key: destinationKey(route, domain), route, domain };
  }

  /** Whether mail for this address would be delivered at all (for a refusal at RCPT, in the session). */
  isRoutable(address: string): boolean {
    return this.expand(address).some((a) => this.route(a).route.kind !== 'refuse');
  }

  /**
   * Aliases applied to a message's recipients: each envelope recipient becomes one or more. An
   * address reached twice (two aliases naming it) is delivered once, for the first. A changed
   * address keeps its original in ORCPT when the client sent none (RFC 3461 4.2: the DSN names
   * the address the sender used).
   */
  expandRecipients(recipients: readonly DeliveryRecipient[]): ExpandedRecipient[] {
    const out: ExpandedRecipient[] = [];
    const seen = new Set<string>();
    for (const r of recipients) {
      for (const address of this.expand(r.address)) {
        const id = address.toLowerCase();
        if (seen.has(id)) continue;
        seen.add(id);
        const isRewritten = id !== r.address.toLowerCase();
        const orcpt = r.orcpt ?? (isRewritten ? { addrType: 'rfc822', address: r.address } : undefined);
        out.push({ ...r, address, original: r.address, ...(orcpt !== undefined ? { orcpt } : {}) });
      }
    }
    return out;
  }

  /** Expanded recipients -> one job per destination, in order of first appearance; refused apart. */
  group(recipients: readonly ExpandedRecipient[]): RoutedMessage {
    const jobs = new Map<string, { destination: Destination; recipients: ExpandedRecipient[] }>();
    const refused: RoutedMessage['refused'] = [];
    for (const r of recipients) {
      const destination = this.route(r.address);
      if (destination.route.kind === 'refuse') {
        refused.push({ recipient: r, result: { status: 'failed', reply: REFUSED_REPLY, remoteMta: null } });
        continue;
      }
      const job = jobs.get(destination.key);
      if (job === undefined) jobs.set(destination.key, { destination, recipients: [r] });
      else job.recipients.push(r);
    }
    return { jobs: [...jobs.values()], refused };
  }
}

/** The domain of an address, lowercased (RFC 5321 2.4); an address literal stays bracketed. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}

/** The destination's name: one job (and, for SMTP, one connection cache entry) per key. */
export function destinationKey(route: Route, domain: string): string {
  const tls = 'tls' in route && route.tls !== 'opportunistic' ? `;tls=${route.tls}` : '';
  switch (route.kind) {
    case 'mx':
      return `mx:${domain}${tls}`;
    case 'smtp':
      return `smtp:[${route.host}]:${route.port}${tls}`;
    case 'lmtp':
      return 'socket' in route ? `lmtp:unix:${route.socket}` : `lmtp:[${route.host}]:${route.port}`;
    case 'maildir':
      return `maildir:${route.path}`;
    case 'refuse':
      return 'refuse';
    case 'discard':
      return 'discard';
  }
}
