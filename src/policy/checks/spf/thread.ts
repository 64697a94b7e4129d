// The worker thread that runs mailauth's SPF evaluation (check_host, RFC 7208), so mailauth and
// its dependencies (joi, libmime's charset tables, tldts's public suffix list) live in a heap of
// their own: loaded into the SMTP thread they cost every message about 0.1 ms of garbage
// collection, SPF or not (docs/benchmarks.md, "Policy overhead"). Owns its own DNS client, built
// from the same [dns] settings. Never outlives a request's deadline: past it every lookup fails
// with ETIMEOUT (mailauth's temperror), so an abandoned evaluation stops walking its record chain.

import { parentPort, workerData } from 'node:worker_threads';
import type { SPFOptions } from 'mailauth';
import { spf } from 'mailauth/lib/spf/index.js';
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

if (parentPort !== null) {
  const port = parentPort;
  const dns = createDnsClient(workerData as DnsOptions);
  port.on('message', (req: SpfThreadRequest) => {
    void evaluate(dns, req).then((reply) => port.postMessage(reply));
  });
}
