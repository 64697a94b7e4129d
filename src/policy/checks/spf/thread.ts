// The worker thread that runs mailauth's SPF evaluation (check_host, RFC 7208), and its DKIM
// (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489) verification for the authentication check
// (checks/authentication), so mailauth and
// its dependencies (joi, libmime's charset tables, tldts's public suffix list) live in a heap of
// their own: loaded into the SMTP thread they cost every message about 0.1 ms of garbage
// collection, SPF or not (docs/benchmarks.md, "Policy overhead"). Owns its own DNS client, built
// from the same [dns] settings. Never outlives a request's deadline: past it every lookup fails
// with ETIMEOUT (mailauth's temperror), so an abandoned evaluation stops walking its record chain.

import { parentPort, workerData } from 'node:worker_threads';
import type { SPFOptions } from 'mailauth';
import { spf } from 'mailauth/lib/spf/index.js';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { arc } from 'mailauth/lib/arc/index.js';
import { dmarc } from 'mailauth/lib/dmarc/index.js';
import { createDnsClient, type DnsClient, type DnsOptions } from '../../../dns/resolver.ts';

export type SpfThreadRequest = {
  id: number;
  sender: string;
  ip: string;
  helo: string | undefined;
  mta: string;
  maxResolveCount: number;
  maxVoidCount: number;
  /** Date.now() past which no lookup is started or awaited. */
  deadlineMs: number;
};

/** One message to verify: its octets as stored (transferred, not copied), and what to verify. */
export type AuthThreadRequest = {
  id: number;
  kind: 'auth';
  message: Uint8Array;
  isArc: boolean;
  isDmarc: boolean;
  /** The SPF result already known (the SPF check's), or what to evaluate it from; null: none. */
  spf: { result: string; domain: string } | Omit<SpfThreadRequest, 'id' | 'deadlineMs'> | null;
  deadlineMs: number;
};

/** A method's result as mailauth reports it: result, comment, and ptype.property values. */
export type MethodResult = { result: string; comment: string; props: [string, string][] };

export type AuthThreadReply =
  | {
      id: number;
      dkim: (MethodResult & { domain: string; isAligned: boolean })[];
      spf: (MethodResult & { domain: string }) | null;
      arc: MethodResult | null;
      dmarc: (MethodResult & { policy: string; pct: number | null }) | null;
    }
  | { id: number; error: string };

export type SpfThreadReply =
  | { id: number; result: string; comment: string; envelopeFrom: string | null }
  | { id: number; error: string };

// mailauth's typings describe the resolver as returning strings only (MX answers are objects);
// the function is node:dns's `resolve` shape either way, which DnsClient.resolve is.
type MailauthResolver = NonNullable<SPFOptions['resolver']>;

function timedOut(): Error {
  return Object.assign(new Error('SPF evaluation timed out'), { code: 'ETIMEOUT' });
}

/** The DNS client cut off at the deadline. */
function deadlineResolver(dns: DnsClient, deadlineMs: number): (name: string, rrtype: string) => Promise<unknown> {
  return (name, rrtype) => {
    const leftMs = deadlineMs - Date.now();
    if (leftMs <= 0) return Promise.reject(timedOut());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(timedOut()), leftMs);
      dns.resolve(name, rrtype).then(resolve, reject).finally(() => clearTimeout(timer));
    });
  };
}

async function evaluate(dns: DnsClient, req: SpfThreadRequest): Promise<SpfThreadReply> {
  try {
    const res = await spf({
      sender: req.sender,
      ip: req.ip,
      ...(req.helo !== undefined ? { helo: req.helo } : {}),
      mta: req.mta,
      maxResolveCount: req.maxResolveCount,
      maxVoidCount: req.maxVoidCount,
      resolver: deadlineResolver(dns, req.deadlineMs) as MailauthResolver,
    });
    return { id: req.id, result: String(res.status?.result ?? ''), comment: res.status?.comment ?? '', envelopeFrom: res['envelope-from'] ?? null };
  } catch (err) {
    return { id: req.id, error: err instanceof Error ? err.message : String(err) };
  }
}

type MailauthStatus = { result?: string; comment?: string | boolean; [ptype: string]: unknown };

/** mailauth's status object as plain data: result, comment, and the ptype.property pairs. */
function methodResult(status: MailauthStatus | undefined): MethodResult {
  const props: [string, string][] = [];
  for (const ptype of ['policy', 'smtp', 'body', 'header']) {
    const group = status?.[ptype];
    if (group === null || typeof group !== 'object') continue;
    for (const [prop, value] of Object.entries(group as Record<string, unknown>)) {
      if (typeof value === 'string' && value !== '') props.push([`${ptype}.${prop}`, value]);
    }
  }
  return { result: String(status?.result ?? 'none'), comment: typeof status?.comment === 'string' ? status.comment : '', props };
}

async function authenticate(dns: DnsClient, req: AuthThreadRequest): Promise<AuthThreadReply> {
  try {
    const resolver = deadlineResolver(dns, req.deadlineMs);
    // mailauth reads every octet: the body hash streams, the header is parsed once.
    const verified = await dkimVerify(Buffer.from(req.message.buffer, req.message.byteOffset, req.message.byteLength), { resolver: resolver as MailauthResolver, minBitLength: 1024 });
    const raw = verified as unknown as { results: { signingDomain?: string; status: MailauthStatus & { aligned?: string | false } }[]; headerFrom?: string[]; arc?: unknown };
    const dkim = raw.results.map((r) => ({ ...methodResult(r.status), domain: r.signingDomain ?? '', isAligned: typeof r.status.aligned === 'string' }));
    let spfResult: (MethodResult & { domain: string }) | null = null;
    if (req.spf !== null && 'sender' in req.spf) {
      const res = await spf({ sender: req.spf.sender, ip: req.spf.ip, ...(req.spf.helo !== undefined ? { helo: req.spf.helo } : {}), mta: req.spf.mta, maxResolveCount: req.spf.maxResolveCount, maxVoidCount: req.spf.maxVoidCount, resolver: resolver as MailauthResolver });
      const r = String(res.status?.result ?? 'none');
      spfResult = { result: r === 'temperr' ? 'temperror' : r, comment: '', props: [['smtp.mailfrom', res.domain ?? '']], domain: res.domain ?? '' };
    } else if (req.spf !== null) {
      spfResult = { result: req.spf.result, comment: '', props: [], domain: req.spf.domain };
    }
    let arcResult: { status?: MailauthStatus } | null = null;
    if (req.isArc || req.isDmarc) arcResult = (await arc(raw.arc as never, { resolver: resolver as MailauthResolver, minBitLength: 1024 } as never)) as unknown as { status?: MailauthStatus };
    let dmarcReply: (MethodResult & { policy: string; pct: number | null }) | null = null;
    if (req.isDmarc && raw.headerFrom !== undefined && raw.headerFrom.length > 0) {
      const res = (await dmarc({
        headerFrom: raw.headerFrom,
        spfDomains: spfResult !== null && spfResult.result === 'pass' && spfResult.domain !== '' ? [spfResult.domain] : [],
        dkimDomains: raw.results.filter((r) => r.status.result === 'pass').map((r) => ({ domain: r.signingDomain ?? '', aligned: r.status.aligned })),
        arcResult,
        resolver: resolver as MailauthResolver,
      } as never)) as unknown as false | { status?: MailauthStatus; policy?: string; pct?: number };
      if (res !== false) dmarcReply = { ...methodResult(res.status), policy: res.policy ?? '', pct: typeof res.pct === 'number' ? res.pct : null };
    } else if (req.isDmarc) {
      // RFC 7489 6.6.1: no single From address, no DMARC evaluation (mailauth gives none).
      dmarcReply = { result: 'none', comment: 'no single From address', props: [], policy: '', pct: null };
    }
    return { id: req.id, dkim, spf: spfResult, arc: req.isArc && arcResult !== null ? methodResult(arcResult.status) : null, dmarc: dmarcReply };
  } catch (err) {
    return { id: req.id, error: err instanceof Error ? err.message : String(err) };
  }
}

if (parentPort !== null) {
  const port = parentPort;
  const dns = createDnsClient(workerData as DnsOptions);
  port.on('message', (req: SpfThreadRequest | AuthThreadRequest) => {
    if ('kind' in req && req.kind === 'auth') void authenticate(dns, req).then((reply) => port.postMessage(reply));
    else void evaluate(dns, req as SpfThreadRequest).then((reply) => port.postMessage(reply));
  });
}
