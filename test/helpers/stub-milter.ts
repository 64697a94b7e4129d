// A tiny filter speaking just enough of the milter protocol for the client's tests: it frames
// the MTA's commands, records them, and answers each through a script the test gives (a reply,
// silence, garbage, or a close). Real filters (opendkim, spamass-milter, rspamd) are in
// test/integration/milter-real.test.ts; this one exists for the failures they cannot be made to
// show on demand (a hang, garbage, a close mid-message) and for every modification.

import net from 'node:net';

export type MilterCommand = { readonly cmd: string; readonly data: Buffer };

/** What the script answers to one command: packets to send, nothing, or close the connection. */
export type Answer = Buffer[] | 'close';

export type StubScript = (cmd: MilterCommand, conn: { readonly index: number; readonly seen: readonly MilterCommand[] }) => Answer;

export type StubMilter = {
  readonly port: number;
  /** Every connection's commands, in order. */
  readonly connections: MilterCommand[][];
  /** How many connections have closed. */
  closed(): number;
  stop(): Promise<void>;
};

export function pkt(cmd: string, data: Buffer | string = ''): Buffer {
  const d = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(d.length + 1);
  return Buffer.concat([len, Buffer.from(cmd, 'latin1'), d]);
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** The OPTNEG answer: version 6, these actions and protocol flags. */
export function optneg(actions: number, protocol: number): Buffer {
  return pkt('O', Buffer.concat([u32(6), u32(actions), u32(protocol)]));
}

/** NUL-separated strings of a command's data. */
export function strings(data: Buffer): string[] {
  const s = data.toString('utf8').split('\0');
  if (s[s.length - 1] === '') s.pop();
  return s;
}

/** The macros of an SMFIC_MACRO command: for which command, and name -> value. */
export function macros(data: Buffer): { forCmd: string; values: Map<string, string> } {
  const s = strings(data.subarray(1));
  const values = new Map<string, string>();
  for (let i = 0; i + 1 < s.length; i += 2) values.set(s[i], s[i + 1]);
  return { forCmd: String.fromCharCode(data[0]), values };
}

/** `socketPath`: listen on that UNIX socket instead of a free loopback port (then `port` is 0). */
export async function startStubMilter(script: StubScript, socketPath: string | null = null): Promise<StubMilter> {
  const connections: MilterCommand[][] = [];
  const sockets = new Set<net.Socket>();
  let closed = 0;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    const index = connections.length;
    const seen: MilterCommand[] = [];
    connections.push(seen);
    let buf = Buffer.alloc(0);
    socket.on('data', (bytes: Buffer) => {
      buf = Buffer.concat([buf, bytes]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const len = buf.readUInt32BE(0);
        const command = { cmd: String.fromCharCode(buf[4]), data: Buffer.from(buf.subarray(5, 4 + len)) };
        buf = buf.subarray(4 + len);
        seen.push(command);
        const answer = script(command, { index, seen });
        if (answer === 'close') {
          socket.destroy();
          return;
        }
        for (const p of answer) socket.write(p);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed++;
      sockets.delete(socket);
    });
  });
  await new Promise<void>((resolve) => (socketPath === null ? server.listen(0, '127.0.0.1', resolve) : server.listen(socketPath, resolve)));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    port,
    connections,
    closed: () => closed,
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A script that answers `c` to every command that wants a reply (no NR bits), with an override. */
export function replying(protocol: number, actions: number, override: (cmd: MilterCommand) => Answer | undefined = () => undefined): StubScript {
  return (c) => {
    const o = override(c);
    if (o !== undefined) return o;
    switch (c.cmd) {
      case 'O':
        return [optneg(actions, protocol)];
      case 'D':
      case 'A':
      case 'Q':
        return [];
      case 'E':
        return [pkt('c')];
      default:
        return [pkt('c')];
    }
  };
}
