// The timer wheel (timer-wheel.ts) on a hand-driven clock: nothing fires early, everything due
// fires within one resolution, in order of due time; cancel and reschedule (earlier, later, past
// a whole turn) hold; the interval runs only while entries wait.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TimerWheel, WheelEntry, type WheelClock } from './timer-wheel.ts';

function manualClock(startMs = 1_000_000): WheelClock & { t: number; running: number } {
  const c = {
    t: startMs,
    running: 0,
    now: () => c.t,
    every: () => {
      c.running++;
      return () => {
        c.running--;
      };
    },
  };
  return c;
}

test('an entry fires once, not before its due time and within one resolution after it', () => {
  const clock = manualClock();
  const wheel = new TimerWheel({ resolutionMs: 100, slots: 8, clock });
  const fired: number[] = [];
  const e = new WheelEntry((now) => fired.push(now));
  wheel.schedule(e, clock.t + 250);
  assert.equal(clock.running, 1);
  for (let i = 0; i < 10; i++) {
    clock.t += 50;
    wheel.advance();
  }
  assert.equal(fired.length, 1);
  assert.ok(fired[0]! >= 1_000_250 && fired[0]! <= 1_000_350, String(fired[0]));
  assert.equal(wheel.size, 0);
  assert.equal(clock.running, 0, 'the interval stops when nothing waits');
});

test('cancel: a cancelled entry never fires; rescheduled later, it fires at the later time', () => {
  const clock = manualClock();
  const wheel = new TimerWheel({ resolutionMs: 100, slots: 8, clock });
  let a = 0;
  let b = 0;
  const ea = new WheelEntry(() => a++);
  const eb = new WheelEntry(() => b++);
  wheel.schedule(ea, clock.t + 200);
  wheel.schedule(eb, clock.t + 200);
  wheel.cancel(ea);
  wheel.schedule(eb, clock.t + 5_000); // more than a turn of the wheel ahead
  clock.t += 1_000;
  wheel.advance();
  assert.equal(a, 0);
  assert.equal(b, 0);
  clock.t += 4_100;
  wheel.advance();
  assert.equal(b, 1);
});

test('property: whatever the schedule, cancel and advance order, entries fire in due order, never early, at most one resolution late', () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.record({ op: fc.constant('schedule' as const), id: fc.nat(9), inMs: fc.nat(5_000) }),
          fc.record({ op: fc.constant('cancel' as const), id: fc.nat(9) }),
          fc.record({ op: fc.constant('advance' as const), byMs: fc.nat(700) }),
        ),
        { maxLength: 60 },
      ),
      (ops) => {
        const res = 100;
        const clock = manualClock();
        const wheel = new TimerWheel({ resolutionMs: res, slots: 16, clock });
        const expected = new Map<number, number>();
        const fires: { id: number; due: number; at: number }[] = [];
        const entries = Array.from({ length: 10 }, (_, id) => new WheelEntry((now) => {
          fires.push({ id, due: expected.get(id)!, at: now });
          expected.delete(id);
        }));
        const check = (): void => {
          for (const [id, due] of expected) assert.ok(clock.t < due + res, `entry ${id} due ${due} not fired at ${clock.t}`);
        };
        for (const o of ops) {
          if (o.op === 'schedule') {
            wheel.schedule(entries[o.id]!, clock.t + o.inMs);
            expected.set(o.id, clock.t + o.inMs);
          } else if (o.op === 'cancel') {
            wheel.cancel(entries[o.id]!);
            expected.delete(o.id);
          } else {
            clock.t += o.byMs;
            wheel.advance();
            check();
          }
        }
        clock.t += 6_000;
        wheel.advance();
        assert.equal(expected.size, 0);
        for (const f of fires) assert.ok(f.at >= f.due, 'fired early');
        // Within one advance, in order of due time.
        for (let i = 1; i < fires.length; i++) if (fires[i]!.at === fires[i - 1]!.at) assert.ok(fires[i]!.due >= fires[i - 1]!.due);
        assert.equal(wheel.size, 0);
        assert.equal(clock.running, 0);
      },
    ),
    { numRuns: 300 },
  );
});

test('a callback may reschedule itself and others; one that throws does not stop the rest', () => {
  const clock = manualClock();
  const errors: unknown[] = [];
  const wheel = new TimerWheel({ resolutionMs: 100, slots: 8, clock, onError: (err) => errors.push(err) });
  let n = 0;
  const self: WheelEntry = new WheelEntry((now) => {
    if (++n < 3) wheel.schedule(self, now + 100);
  });
  const bad = new WheelEntry(() => {
    throw new Error('owner bug');
  });
  let other = 0;
  const ok = new WheelEntry(() => other++);
  wheel.schedule(self, clock.t + 100);
  wheel.schedule(bad, clock.t + 100);
  wheel.schedule(ok, clock.t + 100);
  for (let i = 0; i < 5; i++) {
    clock.t += 100;
    wheel.advance();
  }
  assert.equal(n, 3);
  assert.equal(other, 1);
  assert.equal(errors.length, 1);
});
