// The body handle in the core: past bodyMemoryBytes the content goes out in append-body outputs
// (the header section stays), so what a session holds stays bounded; any chunking gives the same
// bytes; a dropped transaction's body file is discarded; a header section too large is refused.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MachineDriver, testMachineConfig } from '../../test/helpers/drive.ts';
import type { Output } from './io.ts';
import type { MachineConfig } from './machine-config.ts';
import type { PolicyStage } from './verdict.ts';

const THRESHOLD = 4096;

function config(over: Partial<MachineConfig> = {}): MachineConfig {
  return testMachineConfig({ maxMessageBytes: 1 << 22, isTlsAvailable: false, bodyMemoryBytes: THRESHOLD, ...over });
}

const HEADER = 'Subject: big\r\nX-A: 1\r\n\r\n';
function body(lines: number): string {
  let s = '';
  for (let i = 0; i < lines; i++) s += `line ${i} ${'y'.repeat(60)}\r\n`;
  return s;
}

type Spilled = { appended: Buffer; commit: Extract<Output, { type: 'commit' }> | undefined; discarded: number[]; maxHeld: number };

function run(d: MachineDriver, pieces: readonly string[]): Spilled {
  const appended: Buffer[] = [];
  let maxHeld = 0;
  for (const p of pieces) {
    d.send(p);
    const held = d.machine.transaction?.content?.heldBytes ?? 0;
    maxHeld = Math.max(maxHeld, held);
  }
  for (const o of d.outputs) if (o.type === 'append-body') appended.push(...o.chunks);
  return {
    appended: Buffer.concat(appended),
    commit: d.outputs.find((o) => o.type === 'commit') as Extract<Output, { type: 'commit' }> | undefined,
    discarded: d.outputs.filter((o) => o.type === 'discard-body').map((o) => (o as { seq: number }).seq),
    maxHeld,
  };
}

test('a body past the threshold goes to the body file; the header section stays; any chunking, same bytes', () => {
  const text = body(2000); // ~140 KB
  const wire = `EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n${HEADER}${text}.\r\n`;
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: wire.length - 1 }), { maxLength: 40 }), (cuts) => {
      const at = [...new Set(cuts)].sort((a, b) => a - b);
      const pieces = [0, ...at].map((from, i) => wire.slice(from, at[i] ?? wire.length));
      const d = new MachineDriver(config());
      const r = run(d, pieces);
      assert.ok(r.commit !== undefined);
      const m = r.commit.message;
      assert.deepEqual(m.rest, { kind: 'spilled', offset: 0, bytes: Buffer.byteLength(text) });
      assert.equal(r.appended.toString('latin1'), text, 'the body file gets exactly the body, in order');
      assert.match(Buffer.concat(m.head as Buffer[]).toString('latin1'), /^Received: [^]*\r\nSubject: big\r\nX-A: 1\r\n\r\n$/);
      assert.equal(m.size, Buffer.concat(m.head as Buffer[]).length + Buffer.byteLength(text));
      // Bounded: at most the threshold (then one 64 KiB step) plus one read is ever held.
      const largest = Math.max(...pieces.map((p) => Buffer.byteLength(p)));
      assert.ok(r.maxHeld <= Math.max(THRESHOLD, 64 * 1024) + largest, `held ${r.maxHeld}`);
    }),
    { seed: 4242, numRuns: 60 },
  );
});

test('a small body stays in memory: no append-body, nothing to discard', () => {
  const d = new MachineDriver(config(), { commits: 'accept' });
  const r = run(d, [`EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n${HEADER}${body(10)}.\r\n`]);
  assert.equal(r.appended.length, 0);
  assert.equal(d.outputs.some((o) => o.type === 'commit' && o.message.rest.kind === 'memory'), true);
  assert.deepEqual(r.discarded, []);
});

test('BDAT: chunks past the threshold are spilled as they arrive', () => {
  const text = body(500);
  const msg = `${HEADER}${text}`;
  const half = Math.floor(msg.length / 2);
  const d = new MachineDriver(config());
  const r = run(d, ['EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\n', `BDAT ${half}\r\n${msg.slice(0, half)}`, `BDAT ${msg.length - half} LAST\r\n${msg.slice(half)}`]);
  assert.ok(r.commit !== undefined);
  assert.equal(r.appended.toString('latin1'), text);
});

test('the body file is discarded when its transaction ends: committed, RSET mid-way, refused content, connection closed', () => {
  const start = 'EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n';
  // Committed: discarded after the 250 (the spool has copied it).
  const stored = new MachineDriver(config(), { commits: 'accept' });
  assert.deepEqual(run(stored, [`${start}${HEADER}${body(200)}.\r\n`]).discarded, [1]);
  // Refused after the end of data (a bare LF in the body): discarded.
  const refused = new MachineDriver(config());
  const r = run(refused, [`${start}${HEADER}${body(200)}`, 'bare\nlf\r\n.\r\n']);
  assert.deepEqual(r.discarded, [1]);
  assert.match(refused.replyLines().at(-1)!, /^550 5\.6\.0/);
  // Client gone mid-upload.
  const gone = new MachineDriver(config());
  run(gone, [`${start}${HEADER}${body(200)}`]);
  gone.step({ type: 'timeout', nowMs: gone.tick() });
  assert.ok(gone.outputs.some((o) => o.type === 'discard-body'));
  // BDAT: a first chunk spilled, then RSET.
  const rset = new MachineDriver(config());
  const msg = `${HEADER}${body(200)}`;
  const rr = run(rset, ['EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\n', `BDAT ${msg.length}\r\n${msg}`, 'RSET\r\n']);
  assert.deepEqual(rr.discarded, [1]);
});

test('Security: a header section that does not end within the threshold is refused (552 5.3.4), not held whole', () => {
  const d = new MachineDriver(config());
  let header = '';
  for (let i = 0; header.length < THRESHOLD * 3; i++) header += `X-Filler-${i}: ${'z'.repeat(60)}\r\n`;
  const r = run(d, ['EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n', header, '\r\nbody\r\n.\r\n']);
  assert.equal(r.commit, undefined);
  assert.equal(d.replyLines().at(-1), '552 5.3.4 Message header section too large');
  assert.ok(r.maxHeld <= THRESHOLD + header.length);
  assert.equal(r.appended.length, 0);
});

test('a client that declares a SIZE past the threshold has its body spilled once its header section ends (looked for every 64 KiB)', () => {
  const d = new MachineDriver(config({ bodyMemoryBytes: 1 << 20 }));
  d.send('EHLO c.example\r\nMAIL FROM:<a@c.example> SIZE=2000000\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
  d.send('Subject: big\r\n');
  d.send(`X-A: 1\r\n\r\n${body(500)}`);
  assert.ok(!d.outputs.some((o) => o.type === 'append-body'), 'under 64 KiB held: nothing spilled yet');
  d.send(body(1000));
  assert.ok(d.outputs.some((o) => o.type === 'append-body'), 'spilled well before the 1 MiB threshold');
  assert.ok(d.machine.transaction!.content!.heldBytes < 64 * 1024);
  d.send(`${body(10)}.\r\n`);
  const commit = d.outputs.find((o) => o.type === 'commit') as Extract<Output, { type: 'commit' }>;
  assert.match(Buffer.concat(commit.message.head as Buffer[]).toString('latin1'), /\r\nSubject: big\r\nX-A: 1\r\n\r\n$/);
  assert.deepEqual(commit.message.rest, { kind: 'spilled', offset: 0, bytes: Buffer.byteLength(body(500) + body(1000) + body(10)) });
});

test('Security: a declared-large message whose header is trickled in tiny reads is not searched per read', () => {
  const d = new MachineDriver(config({ bodyMemoryBytes: 1 << 20 }));
  d.send('EHLO c.example\r\nMAIL FROM:<a@c.example> SIZE=3000000\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
  let header = '';
  for (let i = 0; header.length < 300_000; i++) header += `X-Filler-${i}: ${'f'.repeat(40)}\r\n`;
  const started = performance.now();
  for (let at = 0; at < header.length; at += 64) d.send(header.slice(at, at + 64));
  const ms = performance.now() - started;
  d.send('\r\nbody\r\n.\r\n');
  assert.ok(d.outputs.some((o) => o.type === 'commit'));
  // Searching everything held on each of the ~4,800 reads would copy ~700 MB; in steps it is ~1 MB.
  assert.ok(ms < 5000, `${ms} ms`);
});

test('a declared-large message whose content ends with its header section is stored from memory', () => {
  const d = new MachineDriver(config(), { commits: 'accept' });
  d.send('EHLO c.example\r\nMAIL FROM:<a@c.example> SIZE=2000000\r\nRCPT TO:<alice@example.test>\r\n');
  d.send(`BDAT 14\r\nSubject: x\r\n\r\n`);
  assert.equal(d.send('BDAT 0 LAST\r\n').at(-1)?.slice(0, 3), '250');
  const commit = d.outputs.find((o) => o.type === 'commit') as Extract<Output, { type: 'commit' }>;
  assert.equal(commit.message.rest.kind, 'memory');
  assert.match(d.stored[0].toString('latin1'), /\r\nSubject: x\r\n\r\n$/);
});
