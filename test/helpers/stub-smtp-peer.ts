// A scripted SMTP/LMTP server in node:net for the client tests: it records every byte it gets
// (so a test can compare the wire with what it meant to send) and misbehaves on request (hangs,
// closes mid-data, garbage, huge reply lines, 5xx after the data). For *bad* peers and wire
// checks only; the well-behaved peers are the real ones (test/helpers/mail-peers.ts).
// Owns only its listener and the sockets it accepted; loopback only.

import net from 'node:net';
import tls from 'node:tls';

export type StubSession = {
  /** Every byte received on this connection, in order (after STARTTLS: the decrypted bytes). */
  raw: Buffer[];
  commands: string[];
  /** DATA contents as received (still dot-stuffed, final ".CRLF" removed), BDAT contents joined. */
  messages: Buffer[];
};

/** What to answer: a reply string (CRLF added per line), 'hang' (never answer), 'close'. */
export type StubAnswer = string | 'hang' | 'close';

export type StubBehaviour = {
  greeting?: StubAnswer;
  /** EHLO/LHLO keywords after the first line. */
  keywords?: string[];
  isLmtp?: boolean;
  /** Answer a command line instead of the default; undefined keeps the default. */
  onCommand?: (line: string, s: StubSession) => StubAnswer | undefined;
  /** After the data's final dot (LMTP: joined per-recipient replies). */
  afterData?: (s: StubSession, rcpts: number) => StubAnswer;
  /** Stop reading the socket after the 354 (the client's writes back up: data block timeout). */
  stallInData?: boolean;
  /** Close the connection once this many content octets arrived (mid-data). */
  closeAfterDataOctets?: number;
  /** STARTTLS is offered (with keywords) and done with this context. */
  secureContext?: tls.SecureContext;
};

export type StubPeer = { port: number; sessions: StubSession[]; stop(): Promise<void> };

const END = Buffer.from('\r\n.\r\n');

export function startStubPeer(b: StubBehaviour): Promise<StubPeer> {
  const sessions: StubSession[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const s: StubSession = { raw: [], commands: [], messages: [] };
    sessions.push(s);
    serve(socket, s, b, sockets);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      resolve({
        port,
        sessions,
        stop: () =>
          new Promise((done) => {
            for (const so of sockets) so.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}

function serve(first: net.Socket, s: StubSession, b: StubBehaviour, sockets: Set<net.Socket>): void {
  let socket: net.Socket = first;
  let buf: Buffer = Buffer.alloc(0);
  let mode: 'cmd' | 'data' | 'bdat' | 'hung' = 'cmd';
  let bdatLeft = 0;
  let bdatLast = false;
  let bdatParts: Buffer[] = [];
  let rcpts = 0;
  let dataBuf: Buffer = Buffer.alloc(0);
  const answer = (a: StubAnswer): void => {
    if (a === 'hang') mode = 'hung';
    else if (a === 'close') socket.destroy();
    else socket.write(a.endsWith('\n') ? a : `${a}\r\n`);
  };
  const defaults = (line: string): StubAnswer => {
    const verb = line.split(' ')[0].toUpperCase();
    switch (verb) {
      case 'EHLO':
      case 'LHLO': {
        const kws = [...(b.keywords ?? ['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES']), ...(b.secureContext !== undefined && !(socket instanceof tls.TLSSocket) ? ['STARTTLS'] : [])];
        return ['stub.example.test', ...kws].map((k, i, all) => `250${i === all.length - 1 ? ' ' : '-'}${k}\r\n`).join('');
      }
      case 'HELO':
        return '250 stub.example.test';
      case 'MAIL':
        rcpts = 0;
        return '250 2.1.0 Ok';
      case 'RCPT':
        rcpts++;
        return '250 2.1.5 Ok';
      case 'DATA':
        mode = 'data';
        if (b.stallInData === true) setImmediate(() => socket.pause());
        return '354 go ahead';
      case 'RSET':
        return '250 2.0.0 Ok';
      case 'NOOP':
        return '250 2.0.0 Ok';
      case 'QUIT':
        setImmediate(() => socket.end());
        return '221 2.0.0 Bye';
      default:
        return '502 5.5.2 Error: command not recognized';
    }
  };
  const afterData = (): void => {
    const a = b.afterData?.(s, rcpts) ?? (b.isLmtp === true ? Array.from({ length: rcpts }, () => '250 2.0.0 Saved\r\n').join('') : '250 2.0.0 Ok: queued');
    answer(a);
  };
  const onBytes = (d: Buffer): void => {
    s.raw.push(Buffer.from(d));
    if (mode === 'hung') return;
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    for (;;) {
      if ((mode as string) === 'hung') return;
      if (mode === 'data') {
        // The data so far, with the CRLF that ended the DATA line in front (CRLF.CRLF ends it).
        dataBuf = Buffer.concat([dataBuf, buf]);
        buf = Buffer.alloc(0);
        if (b.closeAfterDataOctets !== undefined && dataBuf.length >= b.closeAfterDataOctets) {
          socket.destroy();
          return;
        }
        const all = Buffer.concat([Buffer.from('\r\n'), dataBuf]);
        const end = all.indexOf(END);
        if (end === -1) return;
        s.messages.push(end === 0 ? Buffer.alloc(0) : Buffer.from(all.subarray(2, end + 2)));
        buf = Buffer.from(all.subarray(end + END.length));
        dataBuf = Buffer.alloc(0);
        mode = 'cmd';
        afterData();
        continue;
      }
      if (mode === 'bdat') {
        const take = Math.min(bdatLeft, buf.length);
        bdatParts.push(buf.subarray(0, take));
        bdatLeft -= take;
        buf = buf.subarray(take);
        if (bdatLeft > 0) return;
        mode = 'cmd';
        if (bdatLast) {
          s.messages.push(Buffer.concat(bdatParts));
          bdatParts = [];
          afterData();
        } else answer('250 2.0.0 chunk ok');
        continue;
      }
      const lf = buf.indexOf(0x0a);
      if (lf === -1) return;
      const line = buf.subarray(0, lf).toString('latin1').replace(/\r$/, '');
      buf = buf.subarray(lf + 1);
      s.commands.push(line);
      const custom = b.onCommand?.(line, s);
      const verb = line.split(' ')[0].toUpperCase();
      if (verb === 'BDAT' && custom === undefined) {
        const m = /^BDAT (\d+)( LAST)?$/i.exec(line);
        bdatLeft = m === null ? 0 : Number(m[1]);
        bdatLast = m?.[2] !== undefined;
        mode = 'bdat';
        continue;
      }
      if (verb === 'STARTTLS' && custom === undefined && b.secureContext !== undefined) {
        socket.write('220 2.0.0 Ready to start TLS\r\n');
        socket.removeListener('data', onBytes);
        const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: b.secureContext });
        sockets.add(secure);
        secure.on('error', () => {});
        secure.on('data', onBytes);
        socket = secure;
        buf = Buffer.alloc(0);
        return;
      }
      if (custom !== undefined) {
        if (verb === 'DATA' && custom.startsWith('354')) {
          mode = 'data';
          }
        if (verb === 'MAIL') rcpts = 0;
        if (verb === 'RCPT' && custom.startsWith('2')) rcpts++;
        answer(custom);
      } else answer(defaults(line));
    }
  };
  socket.on('data', onBytes);
  answer(b.greeting ?? '220 stub.example.test ESMTP');
}
