// One session's conversation with a filter, driven directly (no SMTP server) against the stub
// filter on loopback: CONNECT for IPv6 and unknown clients, accept at CONNECT ending the
// filter's part of the session, discard at MAIL discarding that message only, a refused MAIL's
// number used again, and SMFIR_SKIP ending the body early.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { MilterConversation, type SessionFacts, type TransactionFacts } from './conversation.ts';
import { macros, optneg, pkt, replying, startStubMilter, strings } from '../../../test/helpers/stub-milter.ts';

const FACTS: SessionFacts = {
  hostname: 'mx.example.test',
  daemonName: 'portcullis',
  client: { address: '2001:db8::7', port: 4242, name: null },
  local: { address: '::1', port: 25 },
  heloName: 'client.example',
  tls: null,
  auth: { identity: 'alice', mechanism: 'PLAIN' },
};
const txn = (seq: number, sender = 'a@client.example'): TransactionFacts => ({ seq, queueId: `Q${seq}`, mailArgs: [`<${sender}>`], sender });
const deadline = (): number => Date.now() + 5000;

async function until(fn: () => boolean): Promise<void> {
  for (let i = 0; i < 300 && !fn(); i++) await sleep(10);
  assert.ok(fn(), 'timed out waiting');
}
const noBody = async function* (): AsyncIterable<Buffer> {};

function conversation(port: number): MilterConversation {
  return new MilterConversation({ address: { kind: 'tcp', host: '127.0.0.1', port }, connectTimeoutMs: 2000, commandTimeoutMs: 2000, maxBodyBytes: 1 << 20 });
}

test('conversation: CONNECT for an IPv6 client and the auth macros at MAIL; family U for an address that is neither', async (t) => {
  const milter = await startStubMilter(replying(0, 0x1ff));
  t.after(milter.stop);
  const c = conversation(milter.port);
  assert.deepEqual(await c.connect(FACTS, deadline()), { kind: 'continue' });
  assert.deepEqual(await c.mail(FACTS, txn(1), deadline()), { kind: 'continue' });
  c.close();
  const seen = milter.connections[0];
  const connect = seen.find((x) => x.cmd === 'C')!.data;
  const host = connect.indexOf(0);
  assert.equal(connect.toString('latin1', 0, host), '[2001:db8::7]');
  assert.equal(String.fromCharCode(connect[host + 1]), '6');
  assert.equal(connect.readUInt16BE(host + 2), 4242);
  assert.equal(connect.toString('latin1', host + 4, connect.length - 1), '2001:db8::7');
  assert.deepEqual(strings(seen.find((x) => x.cmd === 'H')!.data), ['client.example'], 'HELO caught up before MAIL');
  const mailMacros = macros(seen.findLast((x) => x.cmd === 'D' && x.data[0] === 0x4d)!.data).values;
  assert.equal(mailMacros.get('{auth_authen}'), 'alice');
  assert.equal(mailMacros.get('{auth_type}'), 'PLAIN');

  const u = conversation(milter.port);
  await u.connect({ ...FACTS, client: { address: 'unix-socket', port: 0, name: null } }, deadline());
  u.close();
  const uc = milter.connections[1].find((x) => x.cmd === 'C')!.data;
  assert.equal(uc.toString('latin1', uc.indexOf(0) + 1), 'U', 'family U: no port, no address');
});

test('conversation: accept at CONNECT ends the filter\'s part of the session; discard at MAIL discards that message only; SMFIR_SKIP ends the body', async (t) => {
  const accepting = await startStubMilter(replying(0, 0x1ff, (c) => (c.cmd === 'C' ? [pkt('a')] : undefined)));
  t.after(accepting.stop);
  const a = conversation(accepting.port);
  assert.deepEqual(await a.connect(FACTS, deadline()), { kind: 'accept' });
  assert.deepEqual(await a.mail(FACTS, txn(1), deadline()), { kind: 'continue' });
  assert.deepEqual(await a.content(FACTS, txn(1), [['<b@example.test>']], [], noBody, deadline()), { kind: 'continue' });
  a.close();
  await until(() => accepting.closed() === 1);
  assert.deepEqual(accepting.connections[0].map((x) => x.cmd), ['O', 'D', 'C', 'Q'], 'nothing after the accept but QUIT');

  const body = async function* (): AsyncIterable<Buffer> {
    yield Buffer.alloc(70_000, 0x61);
    yield Buffer.alloc(70_000, 0x62);
  };
  const milter = await startStubMilter((c) => {
    if (c.cmd === 'O') return [optneg(0x1ff, 0x400)]; // SMFIP_SKIP
    if (c.cmd === 'D' || c.cmd === 'A' || c.cmd === 'Q') return [];
    if (c.cmd === 'M' && strings(c.data)[0] === '<drop@client.example>') return [pkt('d')];
    if (c.cmd === 'B') return [pkt('s')];
    return [pkt('c')];
  });
  t.after(milter.stop);
  const c = conversation(milter.port);
  await c.connect(FACTS, deadline());
  assert.deepEqual(await c.mail(FACTS, txn(1, 'drop@client.example'), deadline()), { kind: 'continue' }, 'discard is said at end of message');
  // Not sent: the filter has decided about this message (the check goes on until end of message).
  assert.deepEqual(await c.rcpt(FACTS, txn(1, 'drop@client.example'), ['<b@example.test>'], deadline()), { kind: 'discard' });
  assert.deepEqual(await c.content(FACTS, txn(1, 'drop@client.example'), [['<b@example.test>']], [], body, deadline()), { kind: 'discard' });
  assert.deepEqual(await c.content(FACTS, txn(2), [['<b@example.test>']], [{ name: 'Subject', value: ' x' }], body, deadline()), { kind: 'continue' });
  // The client goes away after MAIL: ABORT, then QUIT.
  await c.mail(FACTS, txn(3), deadline());
  c.close();
  await until(() => milter.closed() === 1);
  const cmds = milter.connections[0].filter((x) => x.cmd !== 'D').map((x) => x.cmd).join(' ');
  assert.equal(cmds, 'O C H M A M R T L N B E M A Q', 'the discarded message aborted; the next one caught up with MAIL and RCPT; one body chunk, then SKIP; an open transaction aborted before QUIT');
});

test('conversation: with SMFIP_NR_HDR the headers go together without a wait, in order; body pieces are packed into 65,535-octet chunks; a progress report restarts the wait', async (t) => {
  const milter = await startStubMilter((c) => {
    if (c.cmd === 'O') return [optneg(0x1ff, 0x80)]; // SMFIP_NR_HDR
    if (c.cmd === 'D' || c.cmd === 'A' || c.cmd === 'Q' || c.cmd === 'L') return [];
    if (c.cmd === 'E') return [pkt('p'), pkt('c')];
    return [pkt('c')];
  });
  t.after(milter.stop);
  const c = conversation(milter.port);
  await c.connect(FACTS, deadline());
  await c.mail(FACTS, txn(1), deadline());
  const fields = [
    { name: 'Subject', value: ' one' },
    { name: 'X-Two', value: ' two\r\n\tfolded' },
    { name: 'X-Three', value: ' three' },
  ];
  const body = async function* (): AsyncIterable<Buffer> {
    yield Buffer.alloc(40_000, 0x61);
    yield Buffer.alloc(40_000, 0x62);
    yield Buffer.alloc(10, 0x63);
  };
  assert.deepEqual(await c.content(FACTS, txn(1), [['<b@example.test>']], fields, body, deadline()), { kind: 'continue' });
  c.close();
  await until(() => milter.closed() === 1);
  const seen = milter.connections[0];
  assert.deepEqual(seen.filter((x) => x.cmd === 'L').map((x) => strings(x.data)), [['Subject', 'one'], ['X-Two', 'two\n\tfolded'], ['X-Three', 'three']]);
  const chunks = seen.filter((x) => x.cmd === 'B').map((x) => x.data);
  assert.deepEqual(chunks.map((b) => b.length), [65_535, 80_010 - 65_535]);
  assert.ok(Buffer.concat(chunks).equals(Buffer.concat([Buffer.alloc(40_000, 0x61), Buffer.alloc(40_000, 0x62), Buffer.alloc(10, 0x63)])));
});
