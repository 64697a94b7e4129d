// One delivery attempt over SMTP or LMTP, shared by SmtpCourier and LmtpCourier: walk the
// candidate next hops in order, reuse a cached session when there is one, open one otherwise,
// run the transaction, and give the session back to the cache. Never retries a job later and
// never reorders the hosts: the MX order (RFC 5321 5.1) is the caller's.
// RFC 5321 5.1 (next host on connection failure or a 4xx greeting), 4.5.4.1 (retry is the
// queue's), RFC 7435 (opportunistic TLS: a failed handshake is retried in the clear).

import type { DeliveryJob, DeliveryReply, RecipientResult } from './types.ts';
import { ConnectionCache } from './connection-cache.ts';
import { ClientConnection, targetKey, type ConnectionOptions, type ConnectTarget, type OpenResult } from './smtp-connection.ts';
import { isWritablePath } from '../protocol/client/commands.ts';
import { LOCAL } from '../protocol/client/session.ts';

export type AttemptFailure = { reply: DeliveryReply; remoteMta: string | null; stage: string };

/** Recipients we refuse before any network: an address that cannot be written as a path. */
function badAddress(address: string): boolean {
  return address === '' || !isWritablePath(address);
}

export async function attemptDelivery(
  job: DeliveryJob,
  targets: readonly ConnectTarget[],
  opts: ConnectionOptions,
  cache: ConnectionCache | null,
  signal: AbortSignal,
): Promise<RecipientResult[]> {
  const results: (RecipientResult | null)[] = job.recipients.map((r) =>
    badAddress(r.address) ? { status: 'failed', reply: LOCAL.badRecipient, remoteMta: null } : null,
  );
  const rest = job.recipients.filter((_, i) => results[i] === null);
  if (badAddress(job.reversePath) && job.reversePath !== '') {
    const reply = LOCAL.badSender;
    return job.recipients.map(() => ({ status: 'failed', reply, remoteMta: null }));
  }
  if (rest.length === 0) return results as RecipientResult[];
  const sub: DeliveryJob = rest.length === job.recipients.length ? job : { ...job, recipients: rest };
  const got = await overHosts(sub, targets, opts, cache, signal);
  let k = 0;
  return results.map((r) => r ?? got[k++]);
}

async function overHosts(
  job: DeliveryJob,
  targets: readonly ConnectTarget[],
  opts: ConnectionOptions,
  cache: ConnectionCache | null,
  signal: AbortSignal,
): Promise<RecipientResult[]> {
  let last: AttemptFailure = { reply: LOCAL.noNextHop, remoteMta: null, stage: 'route' };
  for (const target of targets) {
    if (signal.aborted) break;
    const key = `${opts.protocol}|${opts.tls}|${targetKey(target)}`;
    // A cached session first; if its RSET fails, one fresh connection to the same host.
    for (let attempt = 0; attempt < 2; attempt++) {
      let conn = attempt === 0 && cache !== null ? cache.take(key) : null;
      if (conn === null) {
        const opened = await openWithFallback(target, opts, signal);
        if (!opened.ok) {
          last = { reply: opened.reply, remoteMta: opened.remoteMta, stage: opened.stage };
          break; // next host
        }
        conn = opened.conn;
      }
      const outcome = await conn.send(job, signal);
      if (outcome.kind === 'reuse-failed') {
        conn.destroy();
        continue;
      }
      if (cache !== null && conn.isUsable) cache.put(key, conn);
      else void conn.quit();
      return outcome.results;
    }
  }
  if (signal.aborted) last = { reply: LOCAL.aborted, remoteMta: null, stage: 'abort' };
  // Every host failed before a transaction. A 5xx to EHLO/HELO/LHLO is the peer refusing us for
  // good; anything else (no connection, a 4xx or 5xx greeting, TLS) is worth another try later:
  // a 5xx greeting defers as Postfix's smtp_skip_5xx_greeting does.
  const status = last.stage === 'helo' && last.reply.code >= 500 ? 'failed' : 'deferred';
  return job.recipients.map(() => ({ status, reply: last.reply, remoteMta: last.remoteMta }));
}

/** Opportunistic TLS whose handshake fails is retried once in the clear (RFC 7435 and Postfix's
 *  "may" level); with tls = "required" the failure stands. */
async function openWithFallback(target: ConnectTarget, opts: ConnectionOptions, signal: AbortSignal): Promise<OpenResult> {
  const first = await ClientConnection.open(target, opts, signal);
  if (first.ok || first.stage !== 'tls' || opts.tls !== 'opportunistic' || first.reply.enhanced !== '4.7.5') return first;
  return ClientConnection.open(target, { ...opts, canStartTls: false }, signal);
}
