// Stress mode's hysteresis (stress.ts): on at the on share, off only below the off share.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StressMode } from './stress.ts';

test('stress mode engages at 70 % and disengages only below 50 %', () => {
  let n = 0;
  const changes: [boolean, number][] = [];
  const s = new StressMode({ load: { connections: () => n, max: () => 10 }, onPercent: 70, offPercent: 50, onChange: (isOn, c) => changes.push([isOn, c]) });
  for (const c of [1, 5, 6, 7, 8, 7, 6, 5, 4, 5, 7]) {
    n = c;
    s.update();
  }
  assert.deepEqual(changes, [[true, 7], [false, 4], [true, 7]]);
  assert.equal(s.isOn, true);
});
