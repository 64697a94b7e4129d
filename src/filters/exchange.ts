// One request and one reply over a fresh socket to a scanner (clamd, spamd): connect within the
// connect timeout, write the request as the caller produces it (waiting for the socket to drain,
// each step within the command timeout), read the reply through the caller's reader until it is
// complete or the peer closes. Every failure is a value with a stable code; never throws, never
// leaves the socket open. The protocol (what is written, how the reply is read) is the caller's.

import net from 'node:net';
import { formatEndpoint, type Endpoint } from '../net/endpoint.ts';

export type ExchangeErrorCode = 'connect' | 'timeout' | 'closed';
export type ExchangeError = { readonly kind: 'error'; readonly code: ExchangeErrorCode; readonly reason: string };

export type ExchangeOptions = {
  readonly address: Endpoint;
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
  /** Names the peer in reasons, e.g. "clamd". */
  readonly name: string;
};

/** Reads a reply however its bytes are split: a result once complete, null while more may come. */
export type ReplyReader<R> = {
  push(bytes: Buffer): R | null;
  /** The peer closed: the reply so far, or null for none. */
  end(): R | null;
};

/** Writes bytes; false once the exchange is over (the caller stops producing). */
export type Write = (bytes: Buffer) => Promise<boolean>;

/**
 * Runs one exchange. `send` writes the request; it may end the exchange early with a result of
 * its own (e.g. the message turned out too large). `signal` (the pipeline's budget) ends it as a
 * timeout. `onReset` words the reason when the peer resets while the request is still being sent.
 */
export function exchange<R>(
  opts: ExchangeOptions,
  send: (write: Write) => Promise<R | undefined>,
  reader: ReplyReader<R>,
  signal?: AbortSignal,
  onReset?: string,
): Promise<R | ExchangeError> {
  const where = `${opts.name} ${formatEndpoint(opts.address)}`;
  return new Promise((resolve) => {
    let isDone = false;
    let isConnected = false;
    let isSent = false;
    let timer: NodeJS.Timeout | undefined;
    const socket = opts.address.kind === 'unix' ? net.connect({ path: opts.address.path }) : net.connect({ host: opts.address.host, port: opts.address.port });
    const finish = (result: R | ExchangeError): void => {
      if (isDone) return;
      isDone = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve(result);
    };
    const fail = (code: ExchangeErrorCode, reason: string): void => finish({ kind: 'error', code, reason: `${where}: ${reason}` });
    const arm = (reason: string): void => {
      clearTimeout(timer);
      const ms = isConnected ? opts.commandTimeoutMs : opts.connectTimeoutMs;
      timer = setTimeout(() => fail(isConnected ? 'timeout' : 'connect', `${reason} within ${ms} ms`), ms);
    };
    const onAbort = (): void => fail('timeout', 'the check\'s time budget ran out');
    if (signal?.aborted === true) {
      fail('timeout', 'aborted before connecting');
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    arm('no connection');
    socket.on('data', (bytes: Buffer) => {
      const result = reader.push(bytes);
      if (result !== null) finish(result);
    });
    socket.on('error', (err) => {
      // A peer may answer and close before reading all we send (clamd over its stream limit):
      // our writes then fail, but its reply is what counts.
      const said = reader.end();
      if (said !== null) return finish(said);
      if (!isConnected) return fail('connect', `connect failed: ${err.message}`);
      fail('closed', `connection failed: ${err.message}${!isSent && onReset !== undefined ? ` ${onReset}` : ''}`);
    });
    socket.on('close', () => {
      const said = reader.end();
      if (said !== null) finish(said);
      else fail('closed', 'closed the connection without a reply');
    });

    const write: Write = async (b) => {
      if (isDone) return false;
      if (socket.write(b)) return true;
      await new Promise<void>((resume) => {
        const wake = (): void => {
          socket.off('drain', wake);
          socket.off('close', wake);
          resume();
        };
        socket.on('drain', wake);
        socket.on('close', wake);
      });
      if (isDone) return false;
      arm('no progress sending the message');
      return true;
    };

    socket.once('connect', () => {
      isConnected = true;
      socket.setNoDelay(true);
      arm('no progress sending the message');
      send(write).then(
        (early) => {
          if (early !== undefined) return finish(early);
          if (isDone) return;
          isSent = true;
          arm('no reply');
        },
        (err: unknown) => fail('closed', `reading the message failed: ${err instanceof Error ? err.message : String(err)}`),
      );
    });
  });
}
