// LmtpCourier: delivers a job over LMTP (RFC 2033) to one mailbox server, by TCP or a UNIX
// socket. LHLO instead of EHLO, no HELO fallback, DATA always (one reply per recipient accepted
// at RCPT comes after the final dot, each honoured on its own: one mailbox can be over quota
// while the others are delivered). Never does TLS: LMTP is a local hop (loopback or a socket).
// RFC 2033, RFC 5321 4.5.3.2 (timeouts), RFC 2920 (PIPELINING, which LMTP servers offer).

import type { Courier, DeliveryJob, RecipientResult } from './types.ts';
import { ConnectionCache, type ConnectionCacheOptions } from './connection-cache.ts';
import { attemptDelivery } from './smtp-attempt.ts';
import type { ConnectionOptions, ConnectTarget } from './smtp-connection.ts';
import { RFC_5321_TIMEOUTS, type ClientTimeouts } from '../protocol/client/session.ts';

export type LmtpCourierOptions = {
  target: { host: string; port: number } | { socket: string };
  /** Our name in LHLO. */
  heloName: string;
  timeouts?: Partial<ClientTimeouts>;
  connectTimeoutMs?: number;
  cache?: Partial<ConnectionCacheOptions> | false;
};

export class LmtpCourier implements Courier {
  readonly #target: ConnectTarget;
  readonly #conn: ConnectionOptions;
  readonly #cache: ConnectionCache | null;

  constructor(opts: LmtpCourierOptions) {
    this.#target = opts.target;
    this.#conn = {
      protocol: 'lmtp',
      heloName: opts.heloName,
      tls: 'none',
      canStartTls: false,
      // An LMTP server stores what it is given; it does not relay, so 8BITMIME does not matter.
      eightBitToSevenBitPeer: 'send',
      timeouts: { ...RFC_5321_TIMEOUTS, ...opts.timeouts },
      connectTimeoutMs: opts.connectTimeoutMs ?? 30_000,
    };
    this.#cache = opts.cache === false ? null : new ConnectionCache(opts.cache ?? {});
  }

  deliver(job: DeliveryJob, signal: AbortSignal): Promise<RecipientResult[]> {
    return attemptDelivery(job, [this.#target], this.#conn, this.#cache, signal);
  }

  async close(): Promise<void> {
    await this.#cache?.close();
  }
}
