// The parent watch: fires once when the parent pid changes (the process was orphaned), never for
// a process whose parent is init from the start.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { watchParent } from './parent-watch.ts';

test('watchParent: called once when the parent changes', async () => {
  let ppid = 4242;
  const lost: number[] = [];
  const stop = watchParent((p) => lost.push(p), { intervalMs: 5, getPpid: () => ppid });
  await sleep(30);
  assert.deepEqual(lost, []);
  ppid = 1; // reparented to init
  for (let i = 0; i < 100 && lost.length === 0; i++) await sleep(5);
  ppid = 77;
  await sleep(30);
  assert.deepEqual(lost, [4242]);
  stop();
});

test('watchParent: a process started by init is never orphaned', async () => {
  let ppid = 1;
  const lost: number[] = [];
  const stop = watchParent((p) => lost.push(p), { intervalMs: 5, getPpid: () => ppid });
  ppid = 99;
  await sleep(30);
  assert.deepEqual(lost, []);
  stop();
});
