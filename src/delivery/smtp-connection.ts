// The I/O shell of one outbound SMTP or LMTP connection: a socket (TCP, or a UNIX socket for
// LMTP), one timer, the STARTTLS upgrade, and the content stream, around the sans-I/O
// ClientSession. Never decides a result itself and never retries: the session says what each
// reply means; the courier picks hosts and reuses connections.
// RFC 5321 4.5.3.2 (timeouts, as the session's deadlines), RFC 3207 (STARTTLS), RFC 3030 (BDAT).

import net from 'node:net';
import tls from 'node:tls';
import type { DeliveryJob, DeliveryReply, RecipientResult } from './types.ts';
import { formatBdat } from '../protocol/client/commands.ts';
import { WireEncoder } from '../protocol/client/dot-stuff.ts';
import {
  ClientSession,
  LOCAL,
  type ClientConfig,
  type ClientInput,
  type ClientJob,
  type ClientOutput,
  type ClientResult,
  type SessionStage,
} from '../protocol/client/session.ts';
import type { Extensions } from '../protocol/client/commands.ts';

export type NextHop = { host: string; port: number; /** DNS name for SNI and Remote-MTA. */ name?: string };
export type ConnectTarget = NextHop | { socket: string };

export type ConnectionOptions = ClientConfig & {
  connectTimeoutMs: number;
  /** Passed to tls.connect (ca, servername, rejectUnauthorized, ...). By default the peer's
   *  certificate is not verified: opportunistic TLS (RFC 7435) protects against passive
   *  listeners only, as Postfix's "may" and "encrypt" levels do. */
  tlsOptions?: tls.ConnectionOptions;
};

export type OpenResult =
  | { ok: true; conn: ClientConnection }
  | { ok: false; reply: DeliveryReply; stage: SessionStage | 'connect'; remoteMta: string };

export type SendOutcome = { kind: 'results'; results: RecipientResult[] } | { kind: 'reuse-failed'; reason: string };

/** BDAT chunks are cut at about this size (a few reads of the spool; small enough to keep the
 *  data block timeout meaningful). */
const BDAT_CHUNK_BYTES = 256 * 1024;
/** DATA content is written in pieces of at least this size (the last one smaller). */
const DATA_WRITE_BYTES = 64 * 1024;

export function targetKey(t: ConnectTarget): string {
  return 'socket' in t ? `unix:${t.socket}` : `${t.host}:${t.port}`;
}

function remoteMtaOf(t: ConnectTarget): string {
  return 'socket' in t ? t.socket : (t.name ?? t.host);
}

export function toJob(job: DeliveryJob): ClientJob {
  return {
    reversePath: job.reversePath,
    recipients: job.recipients.map((r) => ({ address: r.address, ...(r.notify !== undefined ? { notify: r.notify } : {}), ...(r.orcpt !== undefined ? { orcpt: r.orcpt } : {}) })),
    bodyType: job.bodyType,
    smtputf8: job.smtputf8,
    ...(job.ret !== undefined ? { ret: job.ret } : {}),
    ...(job.envid !== undefined ? { envid: job.envid } : {}),
    size: job.size,
  };
}

export class ClientConnection {
  readonly target: ConnectTarget;
  readonly remoteMta: string;
  readonly openedAtMs = Date.now();
  /** Transactions started on this connection (the cache bounds reuse by it). */
  uses = 0;
  #socket: net.Socket;
  readonly #session: ClientSession;
  readonly #opts: ConnectionOptions;
  /** One timer per connection, re-armed only when a deadline comes earlier than it: the core
   *  sets a deadline for every command and block, and a setTimeout/clearTimeout pair each time
   *  was a measurable share of a delivery's CPU. */
  #timer: NodeJS.Timeout | null = null;
  #timerAtMs = Infinity;
  #deadlineAtMs = Infinity;
  #isClosed = false;
  #extensions: Extensions | null = null;
  #isTls = false;
  #onOpen: ((r: OpenResult) => void) | null = null;
  #onSent: ((r: SendOutcome) => void) | null = null;
  #job: DeliveryJob | null = null;
  #onIdleClose: (() => void) | null = null;

  private constructor(target: ConnectTarget, opts: ConnectionOptions, socket: net.Socket) {
    this.target = target;
    this.remoteMta = remoteMtaOf(target);
    this.#opts = opts;
    this.#socket = socket;
    this.#session = new ClientSession(opts);
  }

  /** Connects and runs the session to "ready" (greeting, EHLO, STARTTLS). */
  static open(target: ConnectTarget, opts: ConnectionOptions, signal: AbortSignal): Promise<OpenResult> {
    const remoteMta = remoteMtaOf(target);
    return new Promise((resolve) => {
      if (signal.aborted) {
        resolve({ ok: false, reply: LOCAL.aborted, stage: 'connect', remoteMta });
        return;
      }
      const socket = 'socket' in target ? net.connect({ path: target.socket }) : net.connect({ host: target.host, port: target.port });
      socket.setNoDelay(true);
      let isConnected = false;
      let conn: ClientConnection | null = null;
      const connectTimer = setTimeout(() => socket.destroy(new Error('connect timeout')), opts.connectTimeoutMs);
      const onAbort = (): void => {
        // Before the connection: drop the socket; after it (greeting, EHLO, TLS): the session
        // reports the abort as a session failure, which resolves this promise.
        if (conn === null) socket.destroy(new Error('aborted'));
        else conn.#feed({ type: 'abort' });
      };
      signal.addEventListener('abort', onAbort, { once: true });
      const done = (r: OpenResult): void => {
        clearTimeout(connectTimer);
        signal.removeEventListener('abort', onAbort);
        resolve(r);
      };
      socket.once('error', (err: NodeJS.ErrnoException) => {
        if (isConnected) return;
        // RFC 5321 5.1: a host we cannot reach is skipped; the code names why in the reply.
        done({ ok: false, reply: LOCAL.connectFailed(err.code ?? err.message), stage: 'connect', remoteMta });
      });
      socket.once('connect', () => {
        isConnected = true;
        clearTimeout(connectTimer);
        const c = new ClientConnection(target, opts, socket);
        conn = c;
        c.#onOpen = done;
        c.#attach(socket);
        c.#apply(c.#session.start());
      });
    });
  }

  get isUsable(): boolean {
    return !this.#isClosed && this.#session.isReady;
  }

  get extensions(): Extensions | null {
    return this.#extensions;
  }

  get isTls(): boolean {
    return this.#isTls;
  }

  /** Called once when an idle connection is closed by the peer (the cache drops it). */
  onIdleClose(fn: (() => void) | null): void {
    this.#onIdleClose = fn;
  }

  /** One transaction. Never rejects: trouble comes back as deferred results. */
  send(job: DeliveryJob, signal: AbortSignal): Promise<SendOutcome> {
    if (!this.isUsable) return Promise.resolve({ kind: 'reuse-failed', reason: 'connection not usable' });
    this.uses++;
    return new Promise((resolve) => {
      const onAbort = (): void => this.#feed({ type: 'abort' });
      signal.addEventListener('abort', onAbort, { once: true });
      this.#onSent = (r) => {
        signal.removeEventListener('abort', onAbort);
        resolve(r);
      };
      this.#job = job;
      this.#feed({ type: 'transaction', job: toJob(job) });
    });
  }

  /** QUIT politely (bounded by the command timeout); the socket is closed either way. */
  quit(): Promise<void> {
    if (this.#isClosed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#socket.once('close', () => resolve());
      if (this.#session.isReady) this.#feed({ type: 'quit' });
      else this.destroy();
    });
  }

  destroy(): void {
    this.#clearDeadline();
    this.#isClosed = true;
    this.#socket.destroy();
  }

  #attach(socket: net.Socket): void {
    socket.on('data', (data: Buffer) => {
      if (socket === this.#socket) this.#feed({ type: 'bytes', data });
    });
    socket.on('error', () => {
      // 'close' follows and reports it.
    });
    socket.on('close', () => {
      if (socket !== this.#socket) return;
      const wasIdle = this.#session.isReady;
      this.#feed({ type: 'closed', reason: 'peer closed the connection' });
      this.#isClosed = true;
      this.#clearDeadline();
      if (wasIdle) this.#onIdleClose?.();
    });
  }

  #feed(input: ClientInput): void {
    let out: ClientOutput[];
    try {
      out = this.#session.step(input);
    } catch (err) {
      // Our bug: this connection only is given up; the job's recipients are deferred.
      this.destroy();
      const reply = LOCAL.internalError((err as Error).message);
      this.#resolveSent(this.#job === null ? [] : this.#job.recipients.map(() => ({ status: 'deferred', reply, remoteMta: null })));
      this.#resolveOpen({ ok: false, reply, stage: 'greeting', remoteMta: this.remoteMta });
      return;
    }
    this.#apply(out);
  }

  #apply(out: ClientOutput[]): void {
    for (const o of out) this.#handle(o);
  }

  #handle(o: ClientOutput): void {
    switch (o.type) {
      case 'send':
        if (!this.#socket.destroyed) this.#socket.write(o.data);
        return;
      case 'deadline':
        this.#setDeadline(o.timeoutMs);
        return;
      case 'start-tls':
        this.#startTls();
        return;
      case 'ready':
        this.#extensions = o.extensions;
        this.#isTls = o.isTls;
        this.#resolveOpen({ ok: true, conn: this });
        return;
      case 'send-content':
        void this.#streamContent(o.mode, o.isBinary);
        return;
      case 'results':
        this.#resolveSent(o.results.map((r: ClientResult) => ({ status: r.status, reply: r.reply, remoteMta: this.remoteMta })));
        return;
      case 'session-failed':
        this.#resolveOpen({ ok: false, reply: o.reply, stage: o.stage, remoteMta: this.remoteMta });
        return;
      case 'reuse-failed':
        if (this.#onSent !== null) {
          const cb = this.#onSent;
          this.#onSent = null;
          this.#job = null;
          cb({ kind: 'reuse-failed', reason: o.reason });
        }
        return;
      case 'close':
        this.#isClosed = true;
        this.#clearDeadline();
        // Let a QUIT we just wrote go out, then close; destroy if the peer does not finish.
        this.#socket.end();
        setTimeout(() => this.#socket.destroy(), 1000).unref();
        return;
      default:
        return assertNever(o);
    }
  }

  #setDeadline(timeoutMs: number | null): void {
    if (timeoutMs === null) {
      this.#deadlineAtMs = Infinity;
      return;
    }
    this.#deadlineAtMs = performance.now() + timeoutMs;
    if (this.#timer !== null && this.#timerAtMs <= this.#deadlineAtMs) return;
    this.#armTimer(timeoutMs);
  }

  #armTimer(delayMs: number): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timerAtMs = performance.now() + delayMs;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#timerAtMs = Infinity;
      if (this.#deadlineAtMs === Infinity) return;
      const left = this.#deadlineAtMs - performance.now();
      if (left > 0) this.#armTimer(left);
      else {
        this.#deadlineAtMs = Infinity;
        this.#feed({ type: 'timeout' });
      }
    }, delayMs);
  }

  #clearDeadline(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerAtMs = Infinity;
    this.#deadlineAtMs = Infinity;
  }

  #resolveOpen(r: OpenResult): void {
    const cb = this.#onOpen;
    this.#onOpen = null;
    cb?.(r);
  }

  #resolveSent(results: RecipientResult[]): void {
    const cb = this.#onSent;
    this.#onSent = null;
    this.#job = null;
    cb?.({ kind: 'results', results });
  }

  #startTls(): void {
    const plain = this.#socket;
    const servername = 'socket' in this.target ? undefined : (this.target.name ?? (net.isIP(this.target.host) === 0 ? this.target.host : undefined));
    const secure = tls.connect({
      socket: plain,
      rejectUnauthorized: false,
      ...(servername !== undefined ? { servername } : {}),
      ...this.#opts.tlsOptions,
    });
    this.#socket = secure;
    let isUp = false;
    secure.once('secureConnect', () => {
      isUp = true;
      this.#feed({ type: 'tls-ready' });
    });
    secure.once('error', (err) => {
      if (!isUp) this.#feed({ type: 'tls-failed', reason: err.message });
    });
    this.#attach(secure);
  }

  /** Streams the job's content as DATA (dot-stuffed, then ".CRLF") or as BDAT chunks. */
  async #streamContent(mode: 'data' | 'bdat', isBinary: boolean): Promise<void> {
    const job = this.#job;
    if (job === null) return;
    const socket = this.#socket;
    const encoder = new WireEncoder(mode);
    let chunks = 0;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const write = async (buf: Buffer | string): Promise<boolean> => {
      if (this.#isClosed || socket.destroyed) return false;
      if (!socket.write(buf)) {
        const ok = await new Promise<boolean>((resolve) => {
          const onDrain = (): void => {
            socket.off('close', onClose);
            resolve(true);
          };
          const onClose = (): void => {
            socket.off('drain', onDrain);
            resolve(false);
          };
          socket.once('drain', onDrain);
          socket.once('close', onClose);
        });
        if (!ok) return false;
      }
      // RFC 5321 4.5.3.2.5: the data block timeout is per block sent, not for the whole content
      // (a large message read slowly from the spool must not time out while it moves).
      if (!this.#isClosed) this.#feed({ type: 'content-progress' });
      return !this.#isClosed;
    };
    const flushBdat = async (isLast: boolean): Promise<boolean> => {
      const body = Buffer.concat(pending);
      pending = [];
      pendingBytes = 0;
      chunks++;
      return write(Buffer.concat([Buffer.from(formatBdat(body.length, isLast)), body]));
    };
    try {
      for await (const raw of job.content()) {
        const piece = isBinary ? raw : encoder.push(raw);
        pending.push(piece);
        pendingBytes += piece.length;
        if (mode === 'data') {
          // Pieces are gathered into writes of at least DATA_WRITE_BYTES: a small message goes
          // out with its terminator in one write (one syscall, not one per spool read).
          if (pendingBytes >= DATA_WRITE_BYTES) {
            const buf = Buffer.concat(pending);
            pending = [];
            pendingBytes = 0;
            if (!(await write(buf))) return;
          }
          continue;
        }
        if (pendingBytes >= BDAT_CHUNK_BYTES && !(await flushBdat(false))) return;
      }
      const tail = isBinary ? Buffer.alloc(0) : encoder.end();
      if (mode === 'data') {
        pending.push(tail);
        if (!(await write(pending.length === 1 ? tail : Buffer.concat(pending)))) return;
      } else {
        pending.push(tail);
        if (!(await flushBdat(true))) return;
      }
    } catch (err) {
      // The spool could not give us the content: our trouble, deferred, connection dropped (the
      // peer has a half-sent message it must discard).
      this.#feed({ type: 'abort', reply: LOCAL.readError((err as Error).message) });
      this.destroy();
      return;
    }
    this.#feed({ type: 'content-sent', bdatChunks: chunks });
  }
}

function assertNever(x: never): never {
  throw new Error(`smtp connection: unhandled output ${JSON.stringify(x)}`);
}
