// The one SMTP client of the test suite: a loopback connection that reads line by line or reply
// by reply, writes raw bytes (so a test can pipeline or split a command as it likes), upgrades to
// TLS in place, and bounds every wait. A closed connection ends a wait at once, after any complete
// line or reply already read. Can bind a chosen loopback source address (127.0.0.2, ...) so a
// test can play several clients. Tests that need a socket's raw behaviour (never reading, a half
// close) use node:net directly.

import net from 'node:net';
import tls from 'node:tls';

export const REPLY_TIMEOUT_MS = 10_000;

/** One complete reply: its code, its lines as sent (without CRLF), and the last line. */
export type ClientReply = { code: number; lines: string[]; text: string; last: string };

export class SmtpClient {
  #socket: net.Socket;
  #buf = '';
  #closedError: Error | null = null;
  readonly #waiters = new Set<() => void>();
  /** A command (or data) was sent through `expect` and its reply has not arrived. */
  isAwaitingReply = false;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    this.#attach(socket);
  }

  static connect(port: number, opts: { localAddress?: string; host?: string } = {}): Promise<SmtpClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: opts.host ?? '127.0.0.1', port, ...(opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {}) });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new SmtpClient(socket));
      });
    });
  }

  get socket(): net.Socket {
    return this.#socket;
  }

  get isClosed(): boolean {
    return this.#closedError !== null;
  }

  #attach(socket: net.Socket): void {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.#buf += chunk;
      this.#wake();
    });
    const onGone = (err?: Error): void => {
      this.#closedError ??= err ?? new Error('connection closed');
      this.#wake();
    };
    socket.on('error', onGone);
    socket.on('close', () => onGone());
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  /** Resolves on the next data or close, or after `ms`. */
  #wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#waiters.add(done);
    });
  }

  /** Writes `data` as it is (a string as UTF-8). */
  write(data: string | Buffer): void {
    this.#socket.write(data);
  }

  /** The next line (without CRLF); null when the connection closed first. Throws on timeout. */
  async line(timeoutMs = REPLY_TIMEOUT_MS): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.#buf.indexOf('\r\n');
      if (i !== -1) {
        const l = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 2);
        return l;
      }
      if (this.#closedError !== null) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no complete line in ${timeoutMs} ms; got ${JSON.stringify(this.#buf)}`);
      await this.#wait(left);
    }
  }

  /** The next complete reply ("250-a" ... "250 b"); null when the connection closed first. */
  async reply(timeoutMs = REPLY_TIMEOUT_MS): Promise<ClientReply | null> {
    const deadline = Date.now() + timeoutMs;
    const lines: string[] = [];
    for (;;) {
      const l = await this.line(Math.max(1, deadline - Date.now()));
      if (l === null) return null;
      const m = /^(\d{3})(?:([ -]).*)?$/.exec(l);
      if (m === null) throw new Error(`malformed reply line ${JSON.stringify(l)}`);
      lines.push(l);
      if (m[2] !== '-') return { code: Number(m[1]), lines, text: lines.join('\r\n'), last: l };
    }
  }

  /** Sends `line` + CRLF and returns the reply (null: closed first). */
  command(line: string, timeoutMs = REPLY_TIMEOUT_MS): Promise<ClientReply | null> {
    this.write(`${line}\r\n`);
    return this.reply(timeoutMs);
  }

  /** Sends `data` as it is and returns its reply, which must have code `code`; throws otherwise. */
  async expect(data: string, code: number, what = data): Promise<ClientReply> {
    this.isAwaitingReply = true;
    this.write(data);
    const r = await this.reply();
    this.isAwaitingReply = false;
    if (r === null) throw this.#closedError ?? new Error('connection closed');
    if (r.code !== code) throw new Error(`${what.slice(0, 40)}: expected ${code}, got ${r.text}`);
    return r;
  }

  /** The TLS handshake on this connection (after the server's 220 to STARTTLS). */
  async startTls(servername = 'mx.example.test'): Promise<void> {
    const plain = this.#socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    plain.removeAllListeners('error');
    plain.on('error', () => undefined);
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false, servername });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.#socket = secure;
    this.#attach(secure);
  }

  /** Whether the server closed the connection within `timeoutMs`. */
  async waitClosed(timeoutMs = REPLY_TIMEOUT_MS): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.#closedError === null && Date.now() < deadline) await this.#wait(deadline - Date.now());
    return this.#closedError !== null;
  }

  /** Sends `data` and half-closes: the server may still answer and close in its own time. */
  end(data: string): void {
    this.#socket.end(data);
  }

  close(): void {
    this.#socket.destroy();
  }
}

export type SmtpDialogue = {
  /** The greeting. */
  banner: string;
  /** Sends `line` + CRLF (or raw data ending in CRLF.CRLF) and returns the reply's lines. */
  send(line: string): Promise<string>;
  close(): void;
};

/** One command at a time, each reply as text (its lines joined by CRLF); a close rejects. */
export async function smtpConnect(port: number, opts: { localAddress?: string; host?: string } = {}): Promise<SmtpDialogue> {
  const c = await SmtpClient.connect(port, opts);
  const next = async (): Promise<string> => {
    const r = await c.reply();
    if (r === null) throw new Error('connection closed before a complete reply');
    return r.text;
  };
  const banner = await next();
  return {
    banner,
    send: (line) => {
      c.write(line.endsWith('\r\n') ? line : `${line}\r\n`);
      return next();
    },
    close: () => c.close(),
  };
}
