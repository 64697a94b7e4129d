// ReadReclaimer: when it collects the dead read buffers, and when it leaves V8 alone.

import assert from 'node:assert/strict';
import test from 'node:test';
import { CHECK_EVERY_BYTES, ReadReclaimer, SLACK_BYTES, TIME_SHARE_DIVISOR } from './read-reclaim.ts';

const MiB = 1024 * 1024;

function rig(opts: { gcMs?: number } = {}) {
  const state = { held: 10 * MiB, live: 10 * MiB, now: 0, collections: 0 };
  const reclaimer = new ReadReclaimer({
    collect: () => {
      state.collections++;
      state.held = state.live;
      state.now += opts.gcMs ?? 1;
    },
    arrayBufferBytes: () => state.held,
    nowMs: () => state.now,
  });
  /** `bytes` read, each read's buffer dead at once (it adds to what is held until collected). */
  const read = (bytes: number): void => {
    for (let done = 0; done < bytes; done += 64 * 1024) {
      state.held += 64 * 1024;
      reclaimer.noteRead(64 * 1024);
    }
  };
  return { state, reclaimer, read };
}

test('dead read buffers are collected once they exceed the slack, and the pile stays bounded', () => {
  const { state, read } = rig();
  read(SLACK_BYTES - CHECK_EVERY_BYTES);
  assert.equal(state.collections, 0, 'under the slack: no collection');
  for (let i = 0; i < 100; i++) {
    read(CHECK_EVERY_BYTES);
    state.now += 1000;
    assert.ok(state.held - state.live <= SLACK_BYTES + CHECK_EVERY_BYTES, `held ${state.held}`);
  }
  assert.ok(state.collections >= 20, `collected ${state.collections} times`);
});

test('no collection when V8 already collected (what is held went down)', () => {
  const { state, read } = rig();
  for (let i = 0; i < 50; i++) {
    read(CHECK_EVERY_BYTES);
    state.held = state.live; // V8 collected on its own
  }
  assert.equal(state.collections, 0);
});

test('a larger live set raises the floor: a collection only after new growth past the slack', () => {
  const { state, read } = rig();
  read(SLACK_BYTES + CHECK_EVERY_BYTES);
  assert.equal(state.collections, 1);
  state.live = state.held = 80 * MiB; // many sessions now hold their bodies
  read(SLACK_BYTES - CHECK_EVERY_BYTES);
  assert.equal(state.collections, 1);
});

test('forced collections take at most their share of the time', () => {
  const { state, read } = rig({ gcMs: 50 });
  // 4 GiB read in 10 s of wall time, every collection taking 50 ms.
  const steps = (4 * 1024 * MiB) / CHECK_EVERY_BYTES;
  for (let i = 0; i < steps; i++) {
    read(CHECK_EVERY_BYTES);
    state.now += 10_000 / steps;
  }
  const gcMs = state.collections * 50;
  assert.ok(gcMs <= state.now / TIME_SHARE_DIVISOR + 50, `${gcMs} ms of ${state.now} ms`);
  assert.ok(state.collections > 0);
});

test('without a collector (no --expose-gc) nothing happens', () => {
  let looked = 0;
  const reclaimer = new ReadReclaimer({ collect: null, arrayBufferBytes: () => ++looked });
  for (let i = 0; i < 1000; i++) reclaimer.noteRead(1024 * 1024);
  assert.equal(looked, 0);
  assert.equal(reclaimer.collections, 0);
});
