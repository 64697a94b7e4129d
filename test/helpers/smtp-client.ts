// A minimal SMTP client for integration tests: sends one command at a time and returns each
// complete reply (all its lines), bounded in time. Can bind a chosen loopback source address
// (127.0.0.2, ...) so a test can play several clients. Never pipelines: see socket-runner.ts.

import net from 'node:net';

export type SmtpDialogue = {
  /** The greeting. */
  banner: string;
  /** Sends `line` + CRLF (or raw data ending in CRLF.CRLF) and returns the reply. */
  send(line: string): Promise<string>;
  close(): void;
};

const REPLY_TIMEOUT_MS = 10_000;

export async function smtpConnect(port: number, opts: { localAddress?: string } = {}): Promise<SmtpDialogue> {
  const socket = net.connect({ host: '127.0.0.1', port, ...(opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {}) });
  socket.setEncoding('latin1');
  let buffer = '';
  let waiter: ((reply: string) => void) | null = null;
  let failure: Error | null = null;
  let fail: ((err: Error) => void) | null = null;
  const tryDeliver = (): void => {
    // A reply is complete at a line whose 4th character is a space ("250 ok").
    const m = /^(?:\d{3}-[^\r\n]*\r\n)*\d{3}(?: [^\r\n]*)?\r\n/.exec(buffer);
    if (m === null || waiter === null) return;
    buffer = buffer.slice(m[0].length);
    const w = waiter;
    waiter = null;
    w(m[0].trimEnd());
  };
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    tryDeliver();
  });
  const onEnd = (err: Error): void => {
    failure = err;
    fail?.(err);
  };
  socket.on('error', onEnd);
  socket.on('close', () => onEnd(new Error(`connection closed; unread: ${JSON.stringify(buffer)}`)));
  const next = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply in ${REPLY_TIMEOUT_MS} ms; got ${JSON.stringify(buffer)}`)), REPLY_TIMEOUT_MS);
      waiter = (r) => {
        clearTimeout(timer);
        resolve(r);
      };
      fail = (err) => {
        clearTimeout(timer);
        reject(err);
      };
      // A reply already read is delivered even after the close; a closed connection will not
      // complete a partial one, so fail now rather than after the timeout.
      tryDeliver();
      if (waiter !== null && failure !== null) {
        waiter = null;
        fail(failure);
      }
    });
  const banner = await next();
  return {
    banner,
    send: (line) => {
      socket.write(line.endsWith('\r\n') ? line : `${line}\r\n`);
      return next();
    },
    close: () => socket.destroy(),
  };
}
