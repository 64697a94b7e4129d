// SmtpCourier: delivers a job over SMTP to the first of its candidate next hops that takes a
// transaction. The hosts come from the route (a fixed smarthost) or from a resolver (the MX
// helper, RFC 5321 5.1); this file never looks up DNS and never orders hosts itself.
// RFC 5321 (client), RFC 2920, RFC 3030, RFC 3207, RFC 1870, RFC 6152, RFC 6531, RFC 3461.
//
// Why our own client and not nodemailer's SMTPConnection (measured in bench/client.ts, recorded
// in docs/benchmarks.md "Delivery clients"): SMTPConnection sends RCPT commands one at a time and
// waits for each reply even when PIPELINING is offered, has no BDAT, reports one error for the
// whole message instead of a reply per recipient after LMTP's data, and buffers or transforms
// the stream in ways we could not bound. Our client shares the Reply type and xtext encoder
// with the server, caps every reply line, and its session is a sans-I/O machine we can test
// byte by byte.

import type { Courier, DeliveryJob, RecipientResult, TlsPolicy } from './types.ts';
import { ConnectionCache, type ConnectionCacheOptions } from './connection-cache.ts';
import { attemptDelivery } from './smtp-attempt.ts';
import type { ConnectionOptions, NextHop } from './smtp-connection.ts';
import { LOCAL, RFC_5321_TIMEOUTS, type ClientTimeouts } from '../protocol/client/session.ts';
import type tls from 'node:tls';

export type { NextHop } from './smtp-connection.ts';

export type SmtpCourierOptions = {
  /** Candidate next hops in the order to try them, or a function giving them per job (the MX
   *  helper: preference order, equal preferences shuffled, addresses resolved). */
  hosts: readonly NextHop[] | ((job: DeliveryJob, signal: AbortSignal) => Promise<readonly NextHop[]>);
  /** Our name in EHLO/HELO. */
  heloName: string;
  tls?: TlsPolicy;
  tlsOptions?: tls.ConnectionOptions;
  timeouts?: Partial<ClientTimeouts>;
  /** TCP connect timeout per host (Postfix smtp_connect_timeout: 30 s). */
  connectTimeoutMs?: number;
  /** An 8BITMIME message to a peer that lacks 8BITMIME. Default "send": the octets go as they
   *  are. Postfix would first try to convert it to quoted-printable; we never rewrite a message
   *  (it would break DKIM signatures), and every server of the last twenty years accepts 8-bit
   *  octets, so bouncing ("fail", 5.6.3) would lose mail that would have arrived. */
  eightBitToSevenBitPeer?: 'send' | 'fail';
  /** Connection reuse across jobs to the same host; false turns it off. */
  cache?: Partial<ConnectionCacheOptions> | false;
};

export class SmtpCourier implements Courier {
  readonly #opts: SmtpCourierOptions;
  readonly #conn: ConnectionOptions;
  readonly #cache: ConnectionCache | null;

  constructor(opts: SmtpCourierOptions) {
    this.#opts = opts;
    const tlsPolicy = opts.tls ?? 'opportunistic';
    this.#conn = {
      protocol: 'smtp',
      heloName: opts.heloName,
      tls: tlsPolicy,
      canStartTls: tlsPolicy !== 'none',
      eightBitToSevenBitPeer: opts.eightBitToSevenBitPeer ?? 'send',
      timeouts: { ...RFC_5321_TIMEOUTS, ...opts.timeouts },
      connectTimeoutMs: opts.connectTimeoutMs ?? 30_000,
      ...(opts.tlsOptions !== undefined ? { tlsOptions: opts.tlsOptions } : {}),
    };
    this.#cache = opts.cache === false ? null : new ConnectionCache(opts.cache ?? {});
  }

  async deliver(job: DeliveryJob, signal: AbortSignal): Promise<RecipientResult[]> {
    let hosts: readonly NextHop[];
    try {
      hosts = typeof this.#opts.hosts === 'function' ? await this.#opts.hosts(job, signal) : this.#opts.hosts;
    } catch (err) {
      const reply = LOCAL.lookupFailed((err as Error).message);
      return job.recipients.map(() => ({ status: 'deferred', reply, remoteMta: null }));
    }
    return attemptDelivery(job, hosts, this.#conn, this.#cache, signal);
  }

  async close(): Promise<void> {
    await this.#cache?.close();
  }
}
