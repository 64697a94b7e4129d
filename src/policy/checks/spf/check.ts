// SPF (RFC 7208) at MAIL FROM: asks mailauth's check_host() for the MAIL FROM identity, or for the
// HELO identity when the reverse path is null (2.4), and maps each of the seven results to a
// configured action; refusals use the RFC 7372 codes (X.7.23 failed, X.7.24 error).
// Owns only the mapping, the choice of reply (the texts are in protocol/replies.ts) and the added
// header field (Received-SPF, RFC 7208 9.1, or Authentication-Results, RFC 8601). Never evaluates
// SPF itself and never relaxes mailauth's limits (10 DNS mechanisms, 2 void lookups: 4.6.4);
// never checks relay clients (outbound mail); never puts DNS text or control characters into a
// reply; never remembers a refusal by client network (no TTL: the result depends on the sender
// domain, which is the verdict's key).

import { domainToASCII } from 'node:url';
import { isDnsName, MAX_DNS_NAME_CHARS } from '../../../net/domain.ts';
import { MAX_IP_TEXT_CHARS, unmapIPv4 } from '../../../net/ip.ts';
import { arValue, commentText, foldField, kvValue, oneLine } from '../../../message/header-field.ts';
import { Worker } from 'node:worker_threads';
import type { DnsClient, DnsOptions } from '../../../dns/resolver.ts';
import type { AuthThreadReply, AuthThreadRequest, SpfThreadReply, SpfThreadRequest } from './thread.ts';
import type { PolicyVerdict } from '../../../protocol/machine.ts';
import { REPLY, type Reply } from '../../../protocol/replies.ts';
import { BoundedCache } from '../../../util/bounded-cache.ts';
import type { Check, CheckContext } from '../../check.ts';
import { SPF_CONFIG_DEFAULTS, type SpfAction } from './config.ts';

export type SpfResult = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'temperror' | 'permerror';
export type { SpfAction };

export type SpfOptions = {
  /** Every lookup goes through this client (its servers, per-try timeout and tries). */
  dns: DnsClient;
  /** Our name: mailauth's `mta` in the header comment, Received-SPF receiver=, the A-R authserv-id. */
  hostname: string;
  actions: Readonly<Record<SpfResult, SpfAction>>;
  header: 'received-spf' | 'authentication-results' | 'none';
  /** Budget for the whole evaluation (all lookups); running out is a temperror. */
  timeoutMs: number;
  /** How long a result is reused for the same client address, sender and HELO name (0 = never). */
  cacheSeconds?: number;
  /** Bound on cached results (oldest dropped first). */
  maxCacheEntries?: number;
  now?: () => number;
};

/** RFC 7208 8.4 (fail: reject) and 8.6 (temperror: 451); the rest are only marked. The check's
 *  configuration part (config.ts, the [spf] defaults) is the one place these are written. */
const { fail, softfail, neutral, none, temperror, permerror } = SPF_CONFIG_DEFAULTS;
export const SPF_DEFAULT_ACTIONS: Record<SpfResult, SpfAction> = { pass: 'continue', fail, softfail, neutral, none, temperror, permerror };

export const SPF_DEFAULTS = {
  actions: SPF_DEFAULT_ACTIONS,
  header: 'received-spf',
  timeoutMs: 10_000,
  cacheSeconds: 60,
  maxCacheEntries: 10_000,
} as const satisfies Omit<SpfOptions, 'dns' | 'hostname'>;

/** RFC 7208 4.6.4. Passed to mailauth explicitly (its defaults are the same) so they are visible here. */
export const SPF_MAX_DNS_MECHANISMS = 10;
export const SPF_MAX_VOID_LOOKUPS = 2;

const RESULTS: ReadonlySet<string> = new Set<SpfResult>(['pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror']);

/** What one evaluation produced. */
type SpfOutcome = {
  result: SpfResult;
  /** The checked domain, lower-cased (A-labels); '' when there was nothing to check. */
  domain: string;
  identity: 'mailfrom' | 'helo';
  /** For the log: mailauth's comment (may quote the record), never sent to the client. */
  comment: string;
  /** Received-SPF and Authentication-Results field lines (no final CRLF), valid header fields. */
  receivedSpf: string;
  authResults: string;
};


export function spfCheck(opts: SpfOptions): Check {
  const now = opts.now ?? Date.now;
  const cacheMs = (opts.cacheSeconds ?? SPF_DEFAULTS.cacheSeconds) * 1000;
  const maxEntries = opts.maxCacheEntries ?? SPF_DEFAULTS.maxCacheEntries;
  // An evaluation depends only on the client address, the sender (macros may use its local part)
  // and the HELO name, and on DNS: a result is reused for a short while (one DNS TTL's worth of
  // staleness at most, bounded by cacheSeconds), so a busy sender costs one evaluation, not one
  // per message. Temporary errors are never reused.
  const cache = new BoundedCache<string, PolicyVerdict>(maxEntries);
  // The last key built is kept: a busy sender's next message has the same parts, and reusing the
  // string means no building and no hashing it anew in the cache.
  let last = { ip: '', sender: '', helo: '', key: '' };
  const cacheKeyOf = (ctx: CheckContext, ip: string): string => {
    const rp = ctx.transaction?.reversePath ?? null;
    const sender = rp === null ? '<>' : `${rp.localPart}@${rp.domain.toLowerCase()}`;
    const helo = ctx.session.helo?.name ?? ctx.heloName ?? '';
    if (last.ip !== ip || last.sender !== sender || last.helo !== helo) last = { ip, sender, helo, key: `${ip} ${sender} ${helo.toLowerCase()}` };
    return last.key;
  };
  const evaluate = async (ctx: CheckContext, ip: string, signal: AbortSignal, key: string | null): Promise<PolicyVerdict> => {
    const outcome = await evaluateSpf(opts, ctx, ip, signal);
    const header = opts.header === 'received-spf' ? [outcome.receivedSpf] : opts.header === 'authentication-results' ? [outcome.authResults] : [];
    const reason = `spf ${outcome.result} for ${outcome.identity} ${outcome.domain || '(none)'} from ${ip}: ${oneLine(outcome.comment, 400)}`;
    const verdict = verdictFor(opts, { result: outcome.result, domain: outcome.domain, ip, reason }, header);
    if (key !== null && outcome.result !== 'temperror') cache.set(key, verdict, now() + cacheMs);
    return verdict;
  };
  const onTimeout = verdictFor(opts, { result: 'temperror', domain: '', ip: '', reason: `SPF evaluation timed out after ${opts.timeoutMs} ms` }, []);
  return {
    name: 'spf',
    stages: ['mail'],
    timeoutMs: opts.timeoutMs,
    onTimeout,
    key: (ctx) => {
      const id = identityOf(ctx);
      return id.domain !== '' ? id.domain : (ctx.transaction?.reversePath?.domain ?? ctx.session.helo?.name ?? '').toLowerCase();
    },
    // Synchronous when the result is cached: no promise, no timer.
    run: (ctx, signal) => {
      // Security: relay clients send outbound mail; their MAIL FROM is ours to vouch for.
      if (ctx.session.isRelayClient) return { action: 'continue' };
      // IPv4-mapped IPv6 (a dual-stack listener) is the IPv4 client for SPF (RFC 7208 5: ip4).
      const ip = unmapIPv4(ctx.session.peer.address);
      if (cacheMs <= 0 || maxEntries <= 0) return evaluate(ctx, ip, signal, null);
      const key = cacheKeyOf(ctx, ip);
      return cache.get(key, now()) ?? evaluate(ctx, ip, signal, key);
    },
  };
}

/** Runs mailauth for the session's identity; never throws for DNS trouble (that is temperror). */
async function evaluateSpf(opts: SpfOptions, ctx: CheckContext, ip: string, signal: AbortSignal): Promise<SpfOutcome> {
  const id = identityOf(ctx);
  const helo = ctx.session.helo?.name ?? ctx.heloName ?? undefined;
  if (id.domain === '' || id.sender === null) {
    // RFC 7208 4.3: no usable domain (an address literal, no HELO name) -> "none", no DNS.
    const comment = `${opts.hostname}: no domain to check for ${id.identity === 'helo' ? 'the HELO identity' : 'the MAIL FROM identity'}`;
    return finish(opts, { result: 'none', domain: id.domain, identity: id.identity, comment, ip, helo, envelopeFrom: id.sender ?? '' });
  }
  // mailauth runs in a worker thread of its own (thread.ts), started on the first evaluation.
  const res = await spfThreadFor(opts.dns.options).evaluate(
    {
      // For the null reverse path this is "postmaster@<helo>" (RFC 7208 2.4), what mailauth would
      // substitute for a missing sender itself, but with the A-label form of the HELO name.
      sender: id.sender,
      ip,
      helo,
      mta: opts.hostname,
      maxResolveCount: SPF_MAX_DNS_MECHANISMS,
      maxVoidCount: SPF_MAX_VOID_LOOKUPS,
      deadlineMs: Date.now() + opts.timeoutMs,
    },
    signal,
  );
  if ('error' in res) {
    // A lookup cut off by the budget, or the thread failing: mailauth's own word for it.
    return finish(opts, { result: 'temperror', domain: id.domain, identity: id.identity, comment: `${opts.hostname}: ${res.error}`, ip, helo, envelopeFrom: id.sender });
  }
  const raw = res.result;
  const result: SpfResult = RESULTS.has(raw) ? (raw as SpfResult) : raw === 'temperr' ? 'temperror' : 'permerror';
  return finish(opts, {
    result,
    domain: id.domain,
    identity: id.identity,
    comment: res.comment,
    ip,
    helo,
    envelopeFrom: res.envelopeFrom ?? id.sender,
  });
}

type Identity = { identity: 'mailfrom' | 'helo'; domain: string; sender: string | null };

/** RFC 7208 2.4: MAIL FROM, or postmaster@<HELO name> for the null reverse path. */
function identityOf(ctx: CheckContext): Identity {
  const rp = ctx.transaction?.reversePath ?? null;
  if (rp !== null) {
    if (rp.isAddressLiteral) return { identity: 'mailfrom', domain: '', sender: null };
    const domain = asciiDomain(rp.domain);
    return { identity: 'mailfrom', domain, sender: domain === '' ? null : `${rp.localPart}@${domain}` };
  }
  const helo = ctx.session.helo?.name ?? ctx.heloName;
  if (helo === null || helo.startsWith('[')) return { identity: 'helo', domain: '', sender: null };
  const domain = asciiDomain(helo);
  return { identity: 'helo', domain, sender: domain === '' ? null : `postmaster@${domain}` };
}

/** Lower-cased A-label form (mailauth refuses U-labels as "none"), '' when not a domain name. */
function asciiDomain(name: string): string {
  // Nearly every domain is ASCII already: only the rest pays for domainToASCII.
  const bare = name.endsWith('.') ? name.slice(0, -1) : name;
  const ascii = (/^[\x21-\x7e]*$/.test(bare) ? bare : domainToASCII(bare)).toLowerCase();
  return isDnsName(ascii, 2) ? ascii : '';
}

type Finished = {
  result: SpfResult;
  domain: string;
  identity: 'mailfrom' | 'helo';
  comment: string;
  ip: string;
  helo: string | undefined;
  envelopeFrom: string;
};

function finish(opts: SpfOptions, f: Finished): SpfOutcome {
  // mailauth's own field is "Received-SPF: <result> (<comment>) client-ip=<ip>;", folded at 160
  // columns with its comment unbounded (it can quote a record). The same field is rebuilt here
  // from its parts with the comment bounded, plus the pairs RFC 7208 9.1 asks for, then folded.
  const base = `Received-SPF: ${f.result} (${commentText(f.comment)}) client-ip=${f.ip};`;
  const pairs = [
    ...(f.envelopeFrom !== '' ? [`envelope-from=${kvValue(f.envelopeFrom)};`] : []),
    ...(f.helo !== undefined ? [`helo=${kvValue(f.helo)};`] : []),
    `receiver=${kvValue(opts.hostname)};`,
    `identity=${f.identity};`,
  ];
  const receivedSpf = foldField(`${base} ${pairs.join(' ')}`);
  const prop = f.identity === 'mailfrom' ? 'smtp.mailfrom' : 'smtp.helo';
  const propValue = f.identity === 'mailfrom' ? f.domain : (f.domain !== '' ? f.domain : (f.helo ?? ''));
  const authResults = foldField(`Authentication-Results: ${arValue(opts.hostname)}; spf=${f.result}${propValue !== '' ? ` ${prop}=${arValue(propValue)}` : ''}`);
  return { result: f.result, domain: f.domain, identity: f.identity, comment: f.comment, receivedSpf, authResults };
}

function verdictFor(opts: SpfOptions, v: { result: SpfResult; domain: string; ip: string; reason: string }, headers: readonly string[]): PolicyVerdict {
  const action = opts.actions[v.result];
  if (action === 'continue') return headers.length === 0 ? { action: 'continue' } : { action: 'continue', headers };
  const domain = replySafe(v.domain, MAX_DNS_NAME_CHARS) || 'the sender domain';
  const ip = replySafe(v.ip, MAX_IP_TEXT_CHARS) || 'the client';
  let r: Reply;
  if (action === 'tempfail') {
    r = v.result === 'temperror' || v.result === 'permerror' || v.domain === '' ? REPLY.spfTryLater : REPLY.spfDeferred(v.result, domain);
  } else if (v.result === 'permerror') {
    r = REPLY.spfPermerror(domain);
  } else if (v.result === 'temperror') {
    r = REPLY.spfTemperrorRefused(domain);
  } else if (v.result === 'fail' || v.result === 'softfail') {
    r = REPLY.spfFailed(domain, ip);
  } else {
    r = REPLY.spfRefused(v.result, domain, ip);
  }
  // No ttlSeconds: the refusal is about the sender domain (the key), not the client network.
  return { action, reply: r, check: 'spf', reason: v.reason };
}

/** Printable ASCII only, no spaces, bounded: for reply text built from client or DNS data. */
function replySafe(text: string, max: number): string {
  return text.replace(/[^\x21-\x7e]/g, '?').slice(0, max);
}

// ---------------------------------------------------------------------------------------------
// The SPF thread: one per DNS configuration in this process, started on first use, restarted
// after a crash. Requests carry a deadline (the thread stops looking things up past it); the
// caller's signal ends the wait on this side at once.

type SpfThreadResult = Extract<SpfThreadReply, { result: string }> | { error: string };
type AuthThreadResult = Extract<AuthThreadReply, { dkim: unknown }> | { error: string };

/** The thread's client; the authentication check (checks/authentication) shares it. */
export class SpfThread {
  readonly #dns: DnsOptions;
  #worker: Worker | null = null;
  readonly #pending = new Map<number, (reply: SpfThreadResult | AuthThreadResult) => void>();
  #nextId = 1;

  constructor(dns: DnsOptions) {
    this.#dns = dns;
  }

  evaluate(request: Omit<SpfThreadRequest, 'id'>, signal: AbortSignal): Promise<SpfThreadResult> {
    return this.#ask<SpfThreadResult>(request, [], signal, 'SPF evaluation timed out');
  }

  /** DKIM, ARC and DMARC for one message; its octets are moved to the thread (`message` is detached). */
  authenticate(request: Omit<AuthThreadRequest, 'id'>, signal: AbortSignal): Promise<AuthThreadResult> {
    return this.#ask<AuthThreadResult>(request, [request.message.buffer as ArrayBuffer], signal, 'verification timed out');
  }

  #ask<R extends SpfThreadResult | AuthThreadResult>(request: object, transfer: ArrayBuffer[], signal: AbortSignal, timedOut: string): Promise<R> {
    if (signal.aborted) return Promise.resolve({ error: timedOut } as R);
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const onAbort = (): void => settle({ error: timedOut });
      const worker = this.#start();
      const settle = (reply: SpfThreadResult | AuthThreadResult): void => {
        if (!this.#pending.delete(id)) return;
        signal.removeEventListener('abort', onAbort);
        // Idle, the thread never keeps the process alive; with a request pending it does.
        if (this.#pending.size === 0) worker.unref();
        resolve(reply as R);
      };
      this.#pending.set(id, settle);
      signal.addEventListener('abort', onAbort, { once: true });
      worker.ref();
      worker.postMessage({ ...request, id }, transfer);
    });
  }

  #start(): Worker {
    if (this.#worker !== null) return this.#worker;
    const worker = new Worker(new URL('./thread.ts', import.meta.url), { workerData: this.#dns });
    worker.on('message', (reply: SpfThreadReply | AuthThreadReply) => this.#pending.get(reply.id)?.(reply));
    const fail = (why: string): void => {
      if (this.#worker === worker) this.#worker = null;
      for (const settle of [...this.#pending.values()]) settle({ error: why });
    };
    worker.on('error', (err) => fail(`SPF thread failed: ${err.message}`));
    worker.on('exit', (code) => fail(`SPF thread exited (${code})`));
    this.#worker = worker;
    return worker;
  }
}

const spfThreads = new Map<string, SpfThread>();

export function spfThreadFor(dns: DnsOptions): SpfThread {
  const key = JSON.stringify(dns);
  let thread = spfThreads.get(key);
  if (thread === undefined) {
    thread = new SpfThread(dns);
    spfThreads.set(key, thread);
  }
  return thread;
}
