// SmtpCourier: delivers a job over SMTP to the first of its candidate next hops that takes a
// transaction. The hosts come from the route (a fixed smarthost) or from a resolver (the MX
// helper, RFC 5321 5.1); this file never looks up DNS and never orders hosts itself.
// RFC 5321 (client), RFC 2920, RFC 3030, RFC 3207, RFC 1870, RFC 6152, RFC 6531, RFC 3461.
//
// Why our own client and not nodemailer's SMTPConnection (measured in bench/client.ts, recorded
// in docs/benchmarks.md "Delivery clients"): nodemailer 10 pipelines MAIL/RCPT/DATA and reads
// LMTP's per-recipient replies too, and it was not faster (ours: 1.16-1.24x its msgs/s on one
// connection, 1.25-1.6x over 20, a quarter less CPU per message). What decided it: no BDAT; it
// caps a reply at 1 MB where we cap a line at 2 KiB and a reply at 100 lines; it reports a send
// as one error with reply strings, where the queue and the DSN need code, enhanced code and
// lines per recipient; RSET is a round trip of its own (ours leads the pipelined group); and
// SIZE, SMTPUTF8, 8BITMIME and DSN decisions would sit around it rather than in one tested
// machine. Our client is a sans-I/O session (src/protocol/client/) tested byte by byte and
// under any chunking, shares the Reply type and the xtext encoder with the server, and adds no
// runtime dependency.

import type { Courier, DeliveryJob, DeliveryReply, RecipientResult, TlsPolicy } from './types.ts';
import { ConnectionCache, type ConnectionCacheOptions } from './connection-cache.ts';
import { attemptDelivery } from './smtp-attempt.ts';
import type { ConnectionOptions, NextHop } from './smtp-connection.ts';
import { LOCAL, RFC_5321_TIMEOUTS, type ClientTimeouts } from '../protocol/client/session.ts';
import type tls from 'node:tls';

export type { NextHop } from './smtp-connection.ts';

/** No host to try: every recipient gets this result (the MX helper's failed or deferred answer). */
export type HostsRefusal = { status: 'failed' | 'deferred'; reply: DeliveryReply };

export type SmtpCourierOptions = {
  /** Candidate next hops in the order to try them, or a function giving them per job (the MX
   *  helper: preference order, equal preferences shuffled, addresses resolved; for an MX
   *  candidate `{ host: address, port, name: MX host name }`). The function may answer with a
   *  result for every recipient instead (null MX 556 5.1.10, a loop 554 5.4.6, SERVFAIL 4.4.3);
   *  if it throws, the job is deferred 4.4.3. */
  hosts: readonly NextHop[] | ((job: DeliveryJob, signal: AbortSignal) => Promise<readonly NextHop[] | HostsRefusal>);
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
    let hosts: readonly NextHop[] | HostsRefusal;
    try {
      hosts = typeof this.#opts.hosts === 'function' ? await this.#opts.hosts(job, signal) : this.#opts.hosts;
    } catch (err) {
      const reply = LOCAL.lookupFailed((err as Error).message);
      return job.recipients.map(() => ({ status: 'deferred', reply, remoteMta: null }));
    }
    if (!Array.isArray(hosts)) {
      const { status, reply } = hosts as HostsRefusal;
      return job.recipients.map(() => ({ status, reply, remoteMta: null }));
    }
    return attemptDelivery(job, hosts, this.#conn, this.#cache, signal);
  }

  async close(): Promise<void> {
    await this.#cache?.close();
  }
}
