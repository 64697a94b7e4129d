// The machine's own deadlines (deadlines.ts) on an injected clock: the whole-command deadline
// cuts a trickled line, the data-rate window cuts a slow body, the session cap, the idle
// timeout and its stress-mode reduction, the idle-command cap (reset by a transaction), and the
// tarpit's held, doubling error replies and its 421 at max_errors.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MachineDriver, TestClock, testMachineConfig } from '../../test/helpers/drive.ts';
import type { Output } from './machine.ts';
import type { SessionLimits } from './deadlines.ts';
import { formatReply } from './replies.ts';

const LIMITS: SessionLimits = {
  commandTimeoutMs: 300_000,
  dataTimeoutMs: 180_000,
  commandDeadlineMs: 60_000,
  minDataRateBytes: 1024,
  minDataRateWindowMs: 60_000,
  sessionMaxMs: 1_800_000,
  stressTimeoutMs: 10_000,
};

function driver(over: Parameters<typeof testMachineConfig>[0] = {}): { d: MachineDriver; clock: TestClock } {
  const clock = new TestClock();
  const d = new MachineDriver(testMachineConfig({ limits: LIMITS, ...over }), { clock, commits: 'accept', policy: 'continue' });
  return { d, clock };
}

const replies = (outs: Output[]): string[] => outs.flatMap((o) => (o.type === 'reply' ? [formatReply(o.reply).trimEnd()] : []));
const rules = (outs: Output[]): string[] => outs.flatMap((o) => (o.type === 'defense' ? [o.rule] : []));
const isClosed = (outs: Output[]): boolean => outs.some((o) => o.type === 'close');

/** Ticks at the machine's own next deadline until it closes, or `limitMs` has passed. */
function tickUntilClosed(d: MachineDriver, clock: TestClock, limitMs: number): Output[] {
  const start = clock.now();
  const all: Output[] = [];
  for (let i = 0; i < 100 && !isClosed(all) && clock.now() - start <= limitMs; i++) {
    const due = d.machine.nextDeadlineMs;
    if (due === Infinity) break;
    clock.nowMs = Math.max(clock.now(), due);
    all.push(...d.step({ type: 'tick', nowMs: clock.now() }));
  }
  return all;
}

test('command deadline: a line trickled one octet every 5 s is cut at 60 s though every read is in time', () => {
  const { d, clock } = driver();
  const outs: Output[] = [];
  for (let i = 0; i < 30 && !isClosed(outs); i++) {
    clock.advance(5_000);
    outs.push(...d.step({ type: 'bytes', nowMs: clock.now(), data: Buffer.from('E') }));
    if (d.machine.nextDeadlineMs <= clock.now()) outs.push(...d.step({ type: 'tick', nowMs: clock.now() }));
  }
  assert.deepEqual(rules(outs), ['command_deadline']);
  assert.deepEqual(replies(outs), ['421 4.4.2 Timeout, closing connection']);
  assert.ok(isClosed(outs));
  assert.ok(clock.now() - 1_000_000 <= 65_000, 'cut at the deadline, not later');
});

test('command deadline: complete lines never trip it; an early tick does nothing', () => {
  const { d, clock } = driver();
  for (let i = 0; i < 20; i++) {
    clock.advance(50_000);
    assert.deepEqual(d.send('NOOP\r\n'), ['250 2.0.0 Ok']);
    assert.deepEqual(d.step({ type: 'tick', nowMs: clock.now() }), []);
  }
});

test('data rate: a body under 1024 octets a minute is cut; a slow but steady one is not', () => {
  const { d, clock } = driver();
  d.send('EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
  const outs: Output[] = [];
  for (let i = 0; i < 20 && !isClosed(outs); i++) {
    clock.advance(10_000);
    outs.push(...d.step({ type: 'bytes', nowMs: clock.now(), data: Buffer.alloc(100, 0x61) }));
    if (d.machine.nextDeadlineMs <= clock.now()) outs.push(...d.step({ type: 'tick', nowMs: clock.now() }));
  }
  assert.deepEqual(rules(outs), ['min_data_rate']);
  assert.ok(isClosed(outs));

  const steady = driver();
  steady.d.send('EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
  const out2: Output[] = [];
  for (let i = 0; i < 20; i++) {
    steady.clock.advance(10_000);
    out2.push(...steady.d.step({ type: 'bytes', nowMs: steady.clock.now(), data: Buffer.from('a'.repeat(198) + '\r\n') }));
    if (steady.d.machine.nextDeadlineMs <= steady.clock.now()) out2.push(...steady.d.step({ type: 'tick', nowMs: steady.clock.now() }));
  }
  out2.push(...steady.d.step({ type: 'bytes', nowMs: steady.clock.now(), data: Buffer.from('\r\n.\r\n') }));
  assert.deepEqual(rules(out2), []);
  assert.match(replies(out2).at(-1)!, /^250 /);
});

test('session cap, idle timeout, and stress mode shrinking the idle timeout to 10 s', () => {
  const a = driver({ limits: { ...LIMITS, sessionMaxMs: 100_000 } });
  const outA: Output[] = [];
  for (let i = 0; i < 10; i++) {
    a.clock.advance(20_000);
    outA.push(...a.d.step({ type: 'bytes', nowMs: a.clock.now(), data: Buffer.from('NOOP\r\n') }));
    outA.push(...a.d.step({ type: 'tick', nowMs: a.clock.now() }));
  }
  assert.deepEqual(rules(outA), ['session_max']);
  assert.equal(replies(outA).at(-1), '421 4.4.2 Session too long, closing connection');

  const b = driver();
  b.d.send('EHLO c.example\r\n');
  const outB = tickUntilClosed(b.d, b.clock, 400_000);
  assert.deepEqual(replies(outB), ['421 4.4.2 Timeout, closing connection']);
  assert.equal(b.clock.now() - 1_000_000, 300_001, 'the RFC 5321 five minutes');

  const c = driver();
  c.d.send('EHLO c.example\r\n');
  c.d.step({ type: 'stress', nowMs: c.clock.now(), isOn: true });
  const start = c.clock.now();
  const outC = tickUntilClosed(c.d, c.clock, 400_000);
  assert.deepEqual(replies(outC), ['421 4.4.2 Timeout, closing connection']);
  assert.equal(c.clock.now() - start, 10_000);
});

test('idle commands: NOOPs past the cap end the session; a transaction starts the count again', () => {
  const { d } = driver({ maxIdleCommands: 5 });
  d.send('EHLO c.example\r\n');
  for (let i = 0; i < 5; i++) assert.deepEqual(d.send('NOOP\r\n'), ['250 2.0.0 Ok']);
  d.send('MAIL FROM:<a@c.example>\r\n');
  d.send('RSET\r\n');
  for (let i = 0; i < 5; i++) assert.deepEqual(d.send('NOOP\r\n'), ['250 2.0.0 Ok']);
  assert.deepEqual(d.send('NOOP\r\n'), ['421 4.7.0 Too many commands without a transaction, closing connection']);
  assert.ok(d.isClosed || d.outputs.some((o) => o.type === 'close'));
});

test('tarpit: past the free errors each error reply is held, 1 s doubling; the rest waits in order; 421 at max_errors', () => {
  const { d, clock } = driver({ tarpit: { freeErrors: 3, initialDelayMs: 1000, maxDelayMs: 4000 }, maxErrors: 8 });
  d.send('EHLO c.example\r\nMAIL FROM:<a@c.example>\r\n');
  for (let i = 0; i < 3; i++) assert.equal(d.send('RCPT TO:<bad>\r\n').length, 1, 'free errors answered at once');
  const delays: number[] = [];
  const outs: Output[] = [];
  // Every remaining error pipelined at once: each is answered only after its own delay.
  outs.push(...d.step({ type: 'bytes', nowMs: clock.now(), data: Buffer.from('RCPT TO:<bad>\r\n'.repeat(5) + 'NOOP\r\n') }));
  assert.deepEqual(replies(outs), [], 'the fourth error is held');
  let last = clock.now();
  for (let i = 0; i < 20 && !isClosed(outs); i++) {
    const due = d.machine.nextDeadlineMs;
    assert.ok(due > clock.now());
    clock.nowMs = due - 1;
    assert.deepEqual(replies(d.step({ type: 'tick', nowMs: clock.now() })), [], 'never early');
    clock.nowMs = due;
    const got = d.step({ type: 'tick', nowMs: clock.now() });
    if (replies(got).length > 0) {
      delays.push(clock.now() - last);
      last = clock.now();
    }
    outs.push(...got);
  }
  assert.deepEqual(delays, [1000, 2000, 4000, 4000, 4000]);
  assert.deepEqual(rules(outs).filter((r) => r !== 'tarpit'), ['tarpit_disconnect']);
  assert.equal(replies(outs).at(-1), '421 4.7.0 Too many errors, closing connection');
  assert.ok(!replies(outs).includes('250 2.0.0 Ok'), 'the NOOP after the 421 is never answered');
  assert.ok(d.machine.isTarpitted);
});

test('tarpit: a remembered network starts delayed: its first error waits', () => {
  const { d, clock } = driver({ tarpit: { freeErrors: 3, initialDelayMs: 1000, maxDelayMs: 4000 } });
  d.step({ type: 'tarpit-remembered', nowMs: clock.now() });
  assert.deepEqual(d.send('FOO\r\n'), []);
  clock.nowMs = d.machine.nextDeadlineMs;
  assert.deepEqual(replies(d.step({ type: 'tick', nowMs: clock.now() })), ['500 5.5.1 Command unrecognized']);
});
