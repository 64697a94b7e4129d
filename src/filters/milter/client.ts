// The milter transport: one socket to one filter (TCP host:port or a UNIX socket), the codec's
// decoder on its bytes, and bounded waits: a connect timeout, a timeout per awaited response
// (SMFIR_PROGRESS restarts it: the filter says it is still working), and writes that wait for
// the socket to drain. Every failure is a MilterError with a stable code; never throws anything
// else, never leaves a socket open after a failure. The conversation is in conversation.ts.

import net from 'node:net';
import { formatEndpoint, type Endpoint } from '../../net/endpoint.ts';
import { MilterDecoder, type MilterResponse } from './codec.ts';

export type MilterAddress = Endpoint;

export type MilterErrorCode = 'connect' | 'timeout' | 'closed' | 'protocol';

export class MilterError extends Error {
  readonly code: MilterErrorCode;
  constructor(code: MilterErrorCode, message: string) {
    super(message);
    this.name = 'MilterError';
    this.code = code;
  }
}

export const formatAddress: (a: MilterAddress) => string = formatEndpoint;

/** Responses held unread before the filter counts as flooding us (a real one sends a few per command). */
const MAX_QUEUED_RESPONSES = 10_000;

/** Ours, shared: ending a link on purpose is routine (every session), so no error (and no stack trace) is made for it each time. */
const CLOSED_BY_US = new MilterError('closed', 'closed by us');

/**
 * Where every link's socket reads into (net's `onread`): replies are parsed before the read
 * returns and the decoder copies whatever it keeps, so one buffer serves all links of this
 * thread, and a read costs no allocation and no pass through the stream machinery.
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

type Waiter = { resolve: (r: MilterResponse) => void; reject: (e: MilterError) => void; timeoutMs: number };

export class MilterLink {
  readonly #socket: net.Socket;
  readonly #decoder = new MilterDecoder();
  readonly #queue: MilterResponse[] = [];
  #failure: MilterError | null = null;
  #waiter: Waiter | null = null;
  #drainWaiters: (() => void)[] = [];
  // One timer per link, re-armed lazily: a wait only moves #deadline (a number); the timer is
  // created when none is pending, and when it fires early (the deadline moved on) it is set
  // again for what is left. No setTimeout/clearTimeout per awaited response.
  #deadline = 0;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = 0;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on('error', (err) => this.#fail(this.#failure ?? new MilterError('closed', `filter connection failed: ${err.message}`)));
    socket.on('close', () => this.#fail(this.#failure ?? new MilterError('closed', 'filter closed the connection')));
    socket.on('drain', () => this.#wakeDrain());
  }

  /** Opens the connection within `timeoutMs`; a refusal or a timeout is a MilterError('connect'). */
  static connect(address: MilterAddress, timeoutMs: number): Promise<MilterLink> {
    return new Promise((resolve, reject) => {
      let link: MilterLink | null = null;
      const onread = {
        buffer: READ_BUFFER,
        callback: (bytes: number, buffer: Uint8Array): boolean => {
          if (link !== null) link.#onData(Buffer.from(buffer.buffer, buffer.byteOffset, bytes));
          return true;
        },
      };
      const socket = address.kind === 'unix' ? net.connect({ path: address.path, onread }) : net.connect({ host: address.host, port: address.port, onread });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new MilterError('connect', `connect timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      const onError = (err: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(new MilterError('connect', `connect failed: ${err.message}`));
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        socket.setNoDelay(true);
        link = new MilterLink(socket);
        resolve(link);
      });
    });
  }

  get isBroken(): boolean {
    return this.#failure !== null;
  }

  /** Responses received that no wait has taken yet (progress reports aside). */
  get hasUnread(): boolean {
    return this.#queue.some((r) => r.kind !== 'progress');
  }

  /**
   * Writes packets (one step's in one write: corked, a single writev). null when the socket took
   * them; else a promise that resolves once it has drained, within `timeoutMs` (or rejects with
   * the link's failure).
   */
  write(packets: readonly Buffer[], timeoutMs: number): Promise<void> | null {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    const socket = this.#socket;
    let isFull: boolean;
    if (packets.length === 1) isFull = !socket.write(packets[0]);
    else {
      isFull = false;
      socket.cork();
      for (const p of packets) isFull = !socket.write(p) || isFull;
      socket.uncork();
    }
    if (!isFull) return null;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const err = new MilterError('timeout', `write not drained after ${timeoutMs} ms`);
        this.#fail(err);
        reject(err);
      }, timeoutMs);
      this.#drainWaiters.push(() => {
        clearTimeout(timer);
        if (this.#failure !== null) reject(this.#failure);
        else resolve();
      });
    });
  }

  /** The next response other than SMFIR_PROGRESS, which restarts the wait; a timeout closes the link. */
  next(timeoutMs: number): Promise<MilterResponse> {
    const queued = this.#shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.#failure !== null) return Promise.reject(this.#failure);
    if (this.#waiter !== null) return Promise.reject(new MilterError('protocol', 'two waits for one response (our bug)'));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject, timeoutMs };
      this.#arm(timeoutMs);
    });
  }

  /** Ends the conversation politely (SMFIC_QUIT already written by the caller) and closes. */
  end(): void {
    this.#failure ??= CLOSED_BY_US;
    this.#disarm();
    this.#socket.end();
    this.#socket.destroySoon();
    // A filter that never closes its side does not keep the socket alive.
    setTimeout(() => this.#socket.destroy(), 1000).unref();
  }

  destroy(): void {
    this.#fail(this.#failure ?? CLOSED_BY_US);
  }

  #arm(timeoutMs: number): void {
    const now = Date.now();
    this.#deadline = now + timeoutMs;
    // A pending timer that fires no later than the deadline will re-arm itself; one set for
    // later than that (an earlier, longer wait) is replaced.
    if (this.#timer !== null && this.#timerAt <= this.#deadline) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#setTimer(timeoutMs, now);
  }

  #setTimer(ms: number, now: number): void {
    this.#timerAt = now + ms;
    // Unreferenced: an open socket holds the process; a timer left pending after a reply must not.
    this.#timer = setTimeout(() => this.#onTimer(), ms).unref();
  }

  #onTimer(): void {
    this.#timer = null;
    const w = this.#waiter;
    if (w === null || this.#failure !== null) return;
    const now = Date.now();
    if (now >= this.#deadline) this.#fail(new MilterError('timeout', `no response within ${w.timeoutMs} ms`));
    else this.#setTimer(this.#deadline - now, now);
  }

  #disarm(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #shift(): MilterResponse | undefined {
    // Progress is keep-waiting; it never reaches a caller.
    while (this.#queue.length > 0) {
      const r = this.#queue.shift()!;
      if (r.kind !== 'progress') return r;
    }
    return undefined;
  }

  #onData(bytes: Buffer): void {
    const events = this.#decoder.feed(bytes);
    for (let i = 0; i < events.length; i++) {
      const e = events[i];
      if (e.type === 'error') {
        this.#fail(new MilterError('protocol', e.reason));
        return;
      }
      const w = this.#waiter;
      if (w !== null && e.response.kind === 'progress') {
        this.#arm(w.timeoutMs);
        continue;
      }
      if (w !== null && this.#queue.length === 0) {
        // The timer stays pending (the next wait will likely reuse it); it finds no waiter if it fires.
        this.#waiter = null;
        w.resolve(e.response);
      } else {
        this.#queue.push(e.response);
        if (this.#queue.length > MAX_QUEUED_RESPONSES) {
          this.#fail(new MilterError('protocol', `more than ${MAX_QUEUED_RESPONSES} responses unread`));
          return;
        }
      }
    }
  }

  #fail(err: MilterError): void {
    if (this.#failure === null) this.#failure = err;
    if (!this.#socket.destroyed) this.#socket.destroy();
    this.#disarm();
    const w = this.#waiter;
    if (w !== null) {
      this.#waiter = null;
      // Responses already queued were delivered before this; what is left is the failure.
      w.reject(this.#failure);
    }
    this.#wakeDrain();
  }

  #wakeDrain(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const w of waiters) w();
  }
}
