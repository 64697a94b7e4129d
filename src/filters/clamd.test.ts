// clamd's reply parsing (every reply form, any split of its bytes, garbage never throws) and the
// INSTREAM client against stub servers on loopback: the bytes it sends (length-prefixed chunks,
// zero-length end), the stream limit answered before sending, a stub that closes, hangs or sends
// garbage. The real clamd is in test/integration/clamd.test.ts.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import { ClamdReplyReader, clamdScan, MAX_REPLY_BYTES, parseClamdReply, type ClamdResult } from './clamd.ts';

const FC = { seed: 12, numRuns: 300 };

test('clamd replies: OK, FOUND with the signature, the stream limit, errors, and garbage', () => {
  assert.deepEqual(parseClamdReply(Buffer.from('stream: OK')), { kind: 'clean' });
  assert.deepEqual(parseClamdReply(Buffer.from('stream: Portcullis.Test.EICAR.NDB.UNOFFICIAL FOUND')), { kind: 'virus', signature: 'Portcullis.Test.EICAR.NDB.UNOFFICIAL' });
  assert.equal(parseClamdReply(Buffer.from('INSTREAM size limit exceeded. ERROR')).kind, 'too-large');
  assert.deepEqual(parseClamdReply(Buffer.from('Can\'t allocate memory ERROR')), { kind: 'error', code: 'scanner', reason: 'clamd: Can\'t allocate memory ERROR' });
  assert.equal(parseClamdReply(Buffer.from('stream: OK trailing')).kind, 'error');
  assert.equal(parseClamdReply(Buffer.from('stream: \x01bad FOUND')).kind, 'error');
  assert.equal(parseClamdReply(Buffer.from('HTTP/1.1 400 Bad Request')).kind, 'error');
  assert.equal(parseClamdReply(Buffer.alloc(0)).kind, 'error');
});

test('clamd replies: any split of the bytes reads the same; arbitrary bytes never throw and end in one result', () => {
  const replies = fc.oneof(
    fc.constant('stream: OK\0'),
    fc.stringMatching(/^[A-Za-z0-9.\-]{1,40}$/).map((s) => `stream: ${s} FOUND\0`),
    fc.constant('INSTREAM size limit exceeded. ERROR\0'),
    fc.string({ maxLength: 60 }).map((s) => `${s}\0`),
  );
  fc.assert(
    fc.property(replies, fc.array(fc.integer({ min: 1, max: 16 }), { minLength: 1, maxLength: 10 }), (reply, cuts) => {
      const bytes = Buffer.from(reply, 'latin1');
      const whole = new ClamdReplyReader().push(bytes);
      const r = new ClamdReplyReader();
      let result: ClamdResult | null = null;
      for (let at = 0, i = 0; at < bytes.length && result === null; i++) {
        const n = cuts[i % cuts.length];
        result = r.push(bytes.subarray(at, at + n));
        at += n;
      }
      assert.deepEqual(result, whole);
    }),
    FC,
  );
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 3000 }), { maxLength: 6 }), (parts) => {
      const r = new ClamdReplyReader();
      let result: ClamdResult | null = null;
      for (const p of parts) result = r.push(Buffer.from(p)) ?? result;
      result ??= r.end();
      if (result !== null) assert.ok(['clean', 'virus', 'too-large', 'error'].includes(result.kind));
    }),
    FC,
  );
  assert.equal(new ClamdReplyReader().push(Buffer.alloc(MAX_REPLY_BYTES + 1, 0x41))?.kind, 'error');
});

/** A stub clamd: collects what it is sent and answers by `answer` once the stream has ended. */
async function stub(answer: (sent: Buffer, socket: net.Socket) => void): Promise<{ port: number; received: Buffer[]; close: () => Promise<void> }> {
  const received: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    let all = Buffer.alloc(0);
    s.on('error', () => {});
    s.on('data', (b: Buffer) => {
      all = Buffer.concat([all, b]);
      if (all.length >= 14 && all.subarray(all.length - 4).equals(Buffer.alloc(4))) {
        received.push(all);
        answer(all, s);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    received,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

const message = (parts: string[]) => ({ bytes: parts.reduce((n, p) => n + p.length, 0), chunks: async function* () { for (const p of parts) yield Buffer.from(p); } });
const opts = (port: number, over: Partial<Parameters<typeof clamdScan>[0]> = {}) => ({ address: { kind: 'tcp' as const, host: '127.0.0.1', port }, connectTimeoutMs: 2000, commandTimeoutMs: 2000, maxStreamBytes: 1 << 20, ...over });

test('INSTREAM: the command, length-prefixed chunks and the zero-length end; the reply read back', async (t) => {
  const s = await stub((_sent, sock) => sock.end('stream: Test.Sig FOUND\0'));
  t.after(s.close);
  assert.deepEqual(await clamdScan(opts(s.port), message(['Subject: x\r\n\r\n', 'body\r\n'])), { kind: 'virus', signature: 'Test.Sig' });
  const sent = s.received[0];
  const expected = Buffer.concat([Buffer.from('zINSTREAM\0'), Buffer.from([0, 0, 0, 14]), Buffer.from('Subject: x\r\n\r\n'), Buffer.from([0, 0, 0, 6]), Buffer.from('body\r\n'), Buffer.alloc(4)]);
  assert.deepEqual(sent, expected);
});

test('INSTREAM: over stream_max_bytes is too-large before anything is sent; clamd\'s own limit too', async (t) => {
  const s = await stub((_sent, sock) => sock.end('INSTREAM size limit exceeded. ERROR\0'));
  t.after(s.close);
  const big = message(['x'.repeat(2000)]);
  assert.equal((await clamdScan(opts(s.port, { maxStreamBytes: 1024 }), big)).kind, 'too-large');
  assert.equal(s.received.length, 0, 'nothing sent');
  assert.equal((await clamdScan(opts(s.port), big)).kind, 'too-large');
});

test('INSTREAM failures: refused, closed without a reply, hung (command timeout), garbage', async (t) => {
  const closed = await stub((_sent, sock) => sock.destroy());
  const hung = await stub(() => {});
  const garbage = await stub((_sent, sock) => sock.end('\x00\xff\xfegarbage\0'));
  t.after(closed.close);
  t.after(hung.close);
  t.after(garbage.close);
  const freed = await stub(() => {});
  const deadPort = freed.port;
  await freed.close();
  const m = message(['Subject: x\r\n\r\nbody\r\n']);
  const refused = await clamdScan(opts(deadPort), m);
  assert.equal(refused.kind === 'error' && refused.code, 'connect');
  const c = await clamdScan(opts(closed.port), m);
  assert.equal(c.kind === 'error' && c.code, 'closed');
  const h = await clamdScan(opts(hung.port, { commandTimeoutMs: 200 }), m);
  assert.equal(h.kind === 'error' && h.code, 'timeout');
  assert.match(h.kind === 'error' ? h.reason : '', /no reply within 200 ms/);
  const g = await clamdScan(opts(garbage.port), m);
  assert.equal(g.kind === 'error' && g.code, 'protocol');
  const ac = new AbortController();
  const pending = clamdScan(opts(hung.port), m, ac.signal);
  setTimeout(() => ac.abort(), 50);
  const aborted = await pending;
  assert.equal(aborted.kind === 'error' && aborted.code, 'timeout');
});

test('INSTREAM: a connect that never completes is cut by the connect timeout', async (t) => {
  // A listener whose accept queue is full (backlog 0, never accepting, two connections queued):
  // the kernel drops further SYNs, so a connect hangs. Python, since Node always accepts.
  const py = spawn('python3', ['-c', 'import socket,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)'], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => {
    py.kill();
  });
  const port = Number(await new Promise<string>((resolve) => py.stdout!.once('data', (b: Buffer) => resolve(b.toString().trim()))));
  const held: net.Socket[] = [];
  for (let i = 0; i < 3; i++) held.push(net.connect({ host: '127.0.0.1', port }).on('error', () => {}));
  t.after(() => {
    for (const s of held) s.destroy();
  });
  await new Promise((r) => setTimeout(r, 200));
  const r = await clamdScan(opts(port, { connectTimeoutMs: 300 }), message(['Subject: x\r\n\r\nbody\r\n']));
  assert.equal(r.kind === 'error' && r.code, 'connect');
  assert.match(r.kind === 'error' ? r.reason : '', /no connection within 300 ms/);
});
