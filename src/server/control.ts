// The operator's control socket: how `portcullis stop` and the `portcullis queue` commands reach
// the running server. A UNIX socket `<spool.dir>/control.sock` (mode 0600, in the spool dir the
// server owns), served by the supervising process (the primary, or the single process): one
// request per connection, one JSON line each way. It is also the spool's lock: a server that
// finds the socket answering refuses to start, so two servers never share a spool (two queue
// managers would deliver the same message twice); a socket nobody answers is a leftover of a
// crash and is replaced.
// Never runs a request without a bound: requests are capped in size and time, answers in time.

import { chmod, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

export const CONTROL_SOCKET = 'control.sock';
/** A request is one short JSON line; anything longer is refused. */
const MAX_REQUEST_BYTES = 64 * 1024;
/** A client that sends nothing (or half a line) is dropped after this. */
const REQUEST_TIMEOUT_MS = 10_000;
/** A client waiting for an answer gives up after this (a `queue list` of 100,000 takes seconds). */
const DEFAULT_ANSWER_TIMEOUT_MS = 120_000;
/** Linux `sun_path` holds 108 bytes including the NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

export type ControlRequest = { op: string; args?: readonly string[] };
export type ControlAnswer = { ok: true; result: unknown } | { ok: false; error: string };
export type ControlHandler = (args: readonly string[]) => Promise<unknown>;

export class ControlError extends Error {}

export function controlSocketPath(spoolDir: string): string {
  return path.join(spoolDir, CONTROL_SOCKET);
}

export type ControlServer = { close(): Promise<void> };

/** Starts the control socket; rejects with ControlError if another server answers on it. */
export async function startControlServer(
  spoolDir: string,
  handlers: ReadonlyMap<string, ControlHandler>,
  onError: (err: unknown, op: string) => void,
): Promise<ControlServer> {
  const file = controlSocketPath(spoolDir);
  if (Buffer.byteLength(file) > MAX_SOCKET_PATH_BYTES) {
    throw new ControlError(`the control socket path ${file} is longer than ${MAX_SOCKET_PATH_BYTES} bytes: use a shorter spool.dir`);
  }
  if (await isAnswering(file)) {
    throw new ControlError(`another Portcullis server is running on the spool ${spoolDir} (its control socket answers)`);
  }
  await unlink(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.setTimeout(REQUEST_TIMEOUT_MS, () => socket.destroy());
    let buf = '';
    const onData = (d: Buffer): void => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > MAX_REQUEST_BYTES) answer(socket, { ok: false, error: 'request too long' });
        return;
      }
      socket.off('data', onData);
      socket.setTimeout(0);
      void serveOne(buf.slice(0, nl), handlers, onError).then((a) => answer(socket, a));
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(file, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(file, 0o600);
  return {
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

async function serveOne(line: string, handlers: ReadonlyMap<string, ControlHandler>, onError: (err: unknown, op: string) => void): Promise<ControlAnswer> {
  let req: ControlRequest;
  try {
    req = JSON.parse(line) as ControlRequest;
  } catch {
    return { ok: false, error: 'request is not JSON' };
  }
  if (typeof req?.op !== 'string') return { ok: false, error: 'request has no op' };
  const args = Array.isArray(req.args) && req.args.every((a) => typeof a === 'string') ? req.args : [];
  const handler = handlers.get(req.op);
  if (handler === undefined) return { ok: false, error: `unknown operation ${JSON.stringify(req.op).slice(0, 80)}` };
  try {
    return { ok: true, result: await handler(args) };
  } catch (err) {
    if (err instanceof ControlError) return { ok: false, error: err.message };
    onError(err, req.op);
    return { ok: false, error: 'internal error (see the server log)' };
  }
}

function answer(socket: net.Socket, a: ControlAnswer): void {
  if (socket.destroyed) return;
  socket.end(`${JSON.stringify(a)}\n`);
}

function isAnswering(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(file);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Sends one request to the running server. Rejects with ControlError('not running') when no
 *  server answers, or with the server's error text. */
export function sendControl(spoolDir: string, req: ControlRequest, timeoutMs = DEFAULT_ANSWER_TIMEOUT_MS): Promise<unknown> {
  const file = controlSocketPath(spoolDir);
  return new Promise((resolve, reject) => {
    const s = net.connect(file);
    const chunks: Buffer[] = [];
    let isConnected = false;
    s.setTimeout(timeoutMs, () => {
      s.destroy();
      reject(new ControlError(`the server did not answer within ${Math.round(timeoutMs / 1000)} s`));
    });
    s.once('connect', () => {
      isConnected = true;
      s.write(`${JSON.stringify(req)}\n`);
    });
    s.on('data', (d: Buffer) => chunks.push(d));
    s.once('error', (err: NodeJS.ErrnoException) => {
      if (!isConnected) reject(new ControlError('not running'));
      else reject(new ControlError(`control socket: ${err.message}`));
    });
    s.once('end', () => {
      let a: ControlAnswer;
      try {
        a = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ControlAnswer;
      } catch {
        return reject(new ControlError('the server sent an unreadable answer'));
      }
      if (a.ok) resolve(a.result);
      else reject(new ControlError(a.error));
    });
  });
}
