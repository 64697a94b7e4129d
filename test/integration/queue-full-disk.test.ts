// A full disk while the queue writes its state, for real (a small tmpfs filled to the brim): the
// state writes reject, the manager says it is unhealthy (the server then answers MAIL with
// 452 4.3.1), nothing already recorded is lost, the rejected records are written once space
// returns, and a restart sees all of it. Needs root to mount the tmpfs; skipped otherwise.

import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { QueueManager } from '../../src/queue/manager.ts';
import type { QueueManagerOptions } from '../../src/queue/manager.ts';
import { systemClock } from '../../src/queue/schedule.ts';
import { mountSmallDisk } from '../helpers/full-disk.ts';
import { envelopeFor, FakeCourier, openReportingSpool, TEMP, until } from '../helpers/queue-fixtures.ts';

test('full disk while writing queue state: unhealthy, nothing recorded lost, recovers when space returns', { timeout: 60_000 }, async (t) => {
  const disk = mountSmallDisk(4 * 1024 * 1024);
  if (disk === null) {
    t.skip('needs root to mount a tmpfs');
    return;
  }
  t.after(() => disk.cleanup());
  const spoolDir = path.join(disk.dir, 'spool');
  const health: boolean[] = [];
  const opts = (): QueueManagerOptions => ({
    spoolDir,
    router: () => ({ destination: 'd', route: { kind: 'smtp', host: '127.0.0.1', port: 25, tls: 'none' } }),
    courierFor: () => new FakeCourier((job) => job.recipients.map(() => TEMP)),
    clock: systemClock,
    stateRetryMs: 100,
    // Every attempt is a recorded deferral (no dead-destination suspension in this test).
    limits: { deadAfterFailures: 1_000 },
    onHealth: (isHealthy) => health.push(isHealthy),
  });
  const now = new Date().toISOString();
  let manager: QueueManager | null = await QueueManager.open(opts());
  const { spool, put } = await openReportingSpool(spoolDir, () => manager);
  for (let i = 0; i < 5; i++) await put(`m${i}`, 300, { receivedAt: new Date().toISOString() });
  // Committed to the spool, reported only once the disk is full.
  const late = await spool.commitEnvelope(envelopeFor('late', 300, { receivedAt: now }), [Buffer.alloc(300, 0x61)]);
  await until(() => manager!.list().every((e) => e.recipients.every((r) => r.status === 'deferred')), 'first attempts recorded');

  disk.fill();
  const lateDone = manager.committed({ queueId: 'late', location: late.location, envelope: envelopeFor('late', 300, { receivedAt: now }) }).then(
    () => 'ok',
    (err: { code?: string }) => err.code ?? 'unknown',
  );
  // Writes until the last page of the state file is full too (bounded).
  const ops: Array<Promise<boolean>> = [];
  for (let i = 0; i < 400 && manager.isHealthy(); i++) {
    ops.push(i % 2 === 0 ? manager.hold('m0') : manager.release('m0'));
    if (i % 20 === 19) await new Promise((resolve) => setTimeout(resolve, 5));
  }
  await until(() => !manager!.isHealthy(), 'the state write fails');
  assert.equal(health[0], false, 'told unhealthy');
  // Its record was written before the disk filled the last page, or was rejected: never lost.
  assert.ok(['ok', 'QUEUE_STATE_WRITE_FAILED'].includes(await lateDone), await lateDone);

  disk.free();
  await until(() => manager!.isHealthy(), 'healthy again once space returns');
  assert.deepEqual(health.slice(0, 2), [false, true]);
  await Promise.all(ops);
  const isHeld = manager.show('m0')?.isHeld;
  await spool.close();
  await manager.close();
  manager = null;

  const again = await QueueManager.open(opts());
  assert.deepEqual(again.list().map((e) => e.queueId).sort(), ['late', 'm0', 'm1', 'm2', 'm3', 'm4']);
  assert.equal(again.show('m0')?.isHeld, isHeld, 'the last hold/release survived');
  for (const e of again.list()) if (e.queueId !== 'late') assert.equal(e.recipients[0].status, 'deferred', JSON.stringify(again.list()));
  await again.close();
});
