// The queue manager over a real spool with an in-process courier (its peer): delivery at once,
// retries on the injected clock, expiry and notices, dead destinations, concurrency, restart
// recovery, operator commands, and reclamation (the spool stops growing).

import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { Courier, Route } from '../delivery/types.ts';
import { bodyFor } from '../../test/helpers/spool-crash-child.ts';
import { envelopeFor, FakeClock, FakeCourier, openReportingSpool, OK, PERM, settle, TEMP, until } from '../../test/helpers/queue-fixtures.ts';
import { QueueManager } from './manager.ts';
import type { QueueManagerOptions, QueueNotice } from './manager.ts';
import { DEFAULT_QUEUE_LIMITS } from './schedule.ts';

const ROUTE: Route = { kind: 'smtp', host: '127.0.0.1', port: 25, tls: 'none' };

async function withSpool(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'portcullis-queue-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function options(dir: string, courier: Courier, clock: FakeClock, extra: Partial<QueueManagerOptions> = {}): QueueManagerOptions {
  return {
    spoolDir: dir,
    router: (address) => (address.endsWith('@refused.example') ? { refusal: { code: 550, enhanced: '5.1.2', lines: ['no route'] } } : { destination: address.split('@')[1], route: ROUTE }),
    courierFor: () => courier,
    clock,
    ...extra,
  };
}

test('a committed message is delivered at once, removed, and its sealed segment deleted', { timeout: 60_000 }, async () => {
  await withSpool(async (dir) => {
    const clock = new FakeClock();
    const courier = new FakeCourier();
    const manager = await QueueManager.open(options(dir, courier, clock));
    const { spool, put } = await openReportingSpool(dir, () => manager);
    const started = performance.now();
    await put('q1', 1000);
    await until(() => manager.list().length === 0, 'delivery');
    const ms = performance.now() - started;
    assert.equal(courier.delivered('q1'), 1);
    assert.ok(courier.contents[0].equals(Buffer.concat(bodyFor('q1', 1000))), 'content streamed intact');
    assert.ok(ms < 1000, `250 to delivered took ${ms} ms`);
    assert.equal((await readdir(path.join(dir, 'segments'))).length, 1, 'the open segment stays');
    await spool.close();
    // Reclaimed once sealed and once the message's removal is durable (a deferrable record).
    let left = await readdir(path.join(dir, 'segments'));
    for (let i = 0; i < 200 && (left.length > 0 || manager.stats().sealedSegments > 0); i++) {
      await settle();
      left = await readdir(path.join(dir, 'segments'));
    }
    assert.deepEqual(left, [], 'segment reclaimed');
    assert.equal(manager.stats().sealedSegments, 0);
    await manager.close();
  });
});

test('deferred recipients are retried on the backoff; after 4 h one delay notice, after 5 d failure', { timeout: 60_000 }, async () => {
  await withSpool(async (dir) => {
    const clock = new FakeClock();
    const attempts: number[] = [];
    const courier = new FakeCourier((job) => {
      attempts.push(clock.nowMs());
      return job.recipients.map(() => TEMP);
    });
    const notices: QueueNotice[] = [];
    // One failing message must not mark the destination dead for this test.
    const manager = await QueueManager.open(options(dir, courier, clock, { onDsn: async (n) => void notices.push(n), limits: { deadAfterFailures: 1_000 } }));
    const { spool, put } = await openReportingSpool(dir, () => manager);
    await put('d1', 100, { receivedAt: new Date(clock.nowMs()).toISOString() });
    await until(() => attempts.length === 1, 'first attempt');
    await settle();
    const idle = (): boolean => manager.isIdle();
    await until(idle, 'idle');
    await clock.advance(299_000, idle);
    assert.equal(attempts.length, 1, 'not before 5 min');
    await clock.advance(1_000, idle);
    await until(() => attempts.length === 2, 'second attempt at 5 min');
    for (let h = 0; h < 5 * 24; h++) await clock.advance(3_600_000, idle);
    await until(() => manager.list().length === 0, 'expired and removed');
    const gaps = attempts.slice(1).map((t, i) => (t - attempts[i]) / 1000);
    assert.deepEqual(gaps.slice(0, 6), [300, 300, 600, 1200, 2400, 4000]);
    assert.ok(gaps.slice(5, -1).every((g) => g === 4000), String(gaps));
    assert.ok(attempts.at(-1)! >= Date.parse('2026-01-06T00:00:00Z'), 'tried until the lifetime ended');
    assert.deepEqual(notices.map((n) => n.kind), ['delay', 'failure']);
    assert.equal(notices[0].recipients[0].reply?.code, 421);
    assert.equal(notices[1].recipients[0].status, 'failed');
    await spool.close();
    await manager.close();
  });
});

test('failure, success and relayed notices: one per event covering its recipients; none for NEVER or the null path', { timeout: 60_000 }, async () => {
  await withSpool(async (dir) => {
    const clock = new FakeClock();
    const courier = new FakeCourier((job) =>
      job.recipients.map((r) => (r.address.startsWith('bad') ? PERM : r.address.startsWith('relay') ? { ...OK, status: 'relayed' as const } : OK)),
    );
    const notices: QueueNotice[] = [];
    const manager = await QueueManager.open(options(dir, courier, clock, { onDsn: async (n) => void notices.push(n) }));
    const { spool, put } = await openReportingSpool(dir, () => manager);
    await put('n1', 100, {
      recipients: [
        { address: 'bad1@example.com' },
        { address: 'bad2@example.com', notify: ['FAILURE'] },
        { address: 'bad3@example.com', notify: 'NEVER' },
        { address: 'good@example.com', notify: ['SUCCESS'] },
        { address: 'relay@example.com', notify: ['SUCCESS'] },
        { address: 'x@refused.example' },
      ],
    });
    await put('n2', 100, { reversePath: '', recipients: [{ address: 'bad@example.com' }] });
    await until(() => manager.list().length === 0, 'done');
    const byKind = Object.fromEntries(notices.map((n) => [`${n.queueId}:${n.kind}`, n.recipients.map((r) => r.index)]));
    assert.deepEqual(byKind['n1:failure']?.sort(), [0, 1]);
    assert.deepEqual(byKind['n1:success'], [3]);
    assert.deepEqual(byKind['n1:relayed'], [4]);
    // The refused recipient fails at routing, in its own (earlier) event.
    assert.ok(notices.some((n) => n.kind === 'failure' && n.recipients.some((r) => r.index === 5 && r.reply?.enhanced === '5.1.2')));
    assert.ok(!notices.some((n) => n.queueId === 'n2'), 'null reverse-path never gets a notice');
    await spool.close();
    await manager.close();
  });
});

test('a destination that keeps failing is backed off as a whole, and concurrency per destination is bounded', { timeout: 60_000 }, async () => {
  await withSpool(async (dir) => {
    const clock = new FakeClock();
    let release: () => void = () => undefined;
    let gate = new Promise<void>((r) => (release = r));
    const courier = new FakeCourier(async (job) => {
      await gate;
      return job.recipients.map(() => TEMP);
    });
    const manager = await QueueManager.open(options(dir, courier, clock, { limits: { destinationConcurrency: 5 } }));
    const { spool, put } = await openReportingSpool(dir, () => manager);
    await Promise.all(Array.from({ length: 60 }, (_, i) => put(`c${i}`, 100)));
    await until(() => courier.active === 5, 'five in flight');
    await settle();
    assert.equal(courier.maxActive, 5);
    release();
    gate = Promise.resolve();
    await until(() => manager.list().every((e) => e.recipients.every((r) => r.status === 'deferred' && !r.isInFlight)), 'all deferred');
    const tried = courier.jobs.length;
    assert.ok(tried < 15, `the dead destination was tried ${tried} times for 60 messages`);
    const suspended = manager.list().filter((e) => e.recipients[0].lastReply?.enhanced === '4.4.1').length;
    assert.ok(suspended >= 45, `${suspended} messages waited for the dead destination without an attempt`);
    // The operator's flush forgets the backoff; a now-working destination takes everything.
    courier.answer = (job) => job.recipients.map(() => OK);
    manager.flush('example.com');
    await until(() => manager.list().length === 0, 'all delivered after the flush');
    await spool.close();
    await manager.close();
  });
});

test('restart: delivered recipients are not delivered again, deferred ones are, unreported commits are found', { timeout: 60_000 }, async () => {
  await withSpool(async (dir) => {
    const clock = new FakeClock();
    const courier = new FakeCourier((job) => job.recipients.map((r) => (r.address.startsWith('later') ? TEMP : OK)));
    let manager: QueueManager | null = await QueueManager.open(options(dir, courier, clock));
    const current = (): QueueManager | null => manager;
    const { spool, put } = await openReportingSpool(dir, current, { writerId: 'w1' });
    await put('r1', 100, { recipients: [{ address: 'now@example.com' }, { address: 'later@example.com' }] });
    await until(() => courier.jobs.length === 1 && !manager?.list()[0]?.recipients[1].isInFlight, 'first attempt');
    await settle();
    await manager.close();
    manager = null;
    // Committed while no manager listened: only the spool knows.
    await put('r2', 100);
    await spool.close();

    const courier2 = new FakeCourier();
    const clock2 = new FakeClock(clock.nowMs());
    const again = await QueueManager.open(options(dir, courier2, clock2));
    const r1 = again.show('r1');
    assert.equal(r1?.recipients[0].status, 'delivered');
    assert.equal(r1?.recipients[1].status, 'deferred');
    assert.ok(again.show('r2'), 'unreported commit recovered');
    await until(() => courier2.delivered('r2') === 1, 'r2 delivered');
    await clock2.advance(300_000);
    await until(() => again.list().length === 0, 'r1 retried');
    assert.deepEqual(courier2.jobs.find((j) => j.queueId === 'r1')?.recipients.map((r) => r.address), ['later@example.com']);
    await again.close();
    assert.deepEqual(await readdir(path.join(dir, 'segments')), []);
  });
});

test('operator commands: quarantine holds, release, hold, bounce, remove, list, show, shape', { timeout: 60_000 }, async () => {
  await withSpool(async (dir) => {
    const clock = new FakeClock();
    const courier = new FakeCourier((job) => job.recipients.map(() => TEMP));
    const notices: QueueNotice[] = [];
    const manager = await QueueManager.open(options(dir, courier, clock, { onDsn: async (n) => void notices.push(n) }));
    const { spool, put } = await openReportingSpool(dir, () => manager, { journalMaxMessageBytes: 1000 });
    await put('qa', 100, { quarantine: 'virus' });
    await put('qb', 5000, { recipients: [{ address: 'a@one.example' }, { address: 'b@two.example' }] });
    await put('qc', 100);
    await until(() => courier.jobs.length >= 3, 'attempts');
    await settle();
    assert.equal(courier.delivered('qa'), 0, 'quarantined message held');
    assert.equal(manager.show('qa')?.isHeld, true);
    const shape = manager.shape();
    assert.deepEqual(shape.rows.map((r) => [r.destination, r.total]).sort(), [['example.com', 2], ['one.example', 1], ['two.example', 1]]);
    assert.equal(shape.rows[0].counts[0] + shape.rows[0].counts.slice(1).reduce((a, b) => a + b, 0), shape.rows[0].total);

    assert.equal(await manager.hold('qc'), true);
    assert.equal(manager.flush('qc'), 0, 'a held message is not flushed');
    assert.equal(await manager.release('qa'), true);
    await until(() => courier.delivered('qa') === 1, 'released message tried');

    assert.equal(await manager.bounce('qb'), true);
    await until(() => manager.show('qb') === null, 'bounced message removed');
    const bounce = notices.find((n) => n.queueId === 'qb');
    assert.equal(bounce?.kind, 'failure');
    assert.equal(bounce?.recipients.length, 2);
    assert.deepEqual(await readdir(path.join(dir, 'messages')), [], 'its message file deleted');

    assert.equal(await manager.remove('qc'), true);
    assert.equal(manager.show('qc'), null);
    assert.equal(await manager.remove('nope'), false);
    assert.deepEqual(manager.list().map((e) => e.queueId), ['qa']);
    await spool.close();
    await manager.close();
    const again = await QueueManager.open(options(dir, new FakeCourier(() => [TEMP]), new FakeClock()));
    assert.deepEqual(again.list().map((e) => e.queueId), ['qa'], 'removals survive a restart');
    await again.close();
  });
});

test('drain: a delivery in flight past the grace is aborted and comes back deferred', { timeout: 60_000 }, async () => {
  await withSpool(async (dir) => {
    const clock = new FakeClock();
    const courier = new FakeCourier(
      (job, signal) =>
        new Promise((resolve) => {
          // The abort may come while the content is still being read.
          if (signal.aborted) resolve(job.recipients.map(() => TEMP));
          signal.addEventListener('abort', () => resolve(job.recipients.map(() => TEMP)));
        }),
    );
    const manager = await QueueManager.open(options(dir, courier, clock));
    const { spool, put } = await openReportingSpool(dir, () => manager);
    await put('g1', 100);
    await until(() => courier.active === 1, 'in flight');
    // drain() arms its grace timer after its own awaits: keep the fake time moving until it ends.
    let isDrained = false;
    const drained = manager.drain(5_000).then(() => (isDrained = true));
    for (let i = 0; i < 200 && !isDrained; i++) {
      await clock.advance(1_000);
      await new Promise((r) => setTimeout(r, 10));
    }
    await drained;
    assert.equal(manager.show('g1')?.recipients[0].status, 'deferred');
    await spool.close();
    await manager.close();
  });
});

test('the spool stops growing: 3,000 messages through small segments leave no segment and no message file', { timeout: 60_000 }, async () => {
  await withSpool(async (dir) => {
    const clock = new FakeClock();
    const courier = new FakeCourier();
    const manager = await QueueManager.open(options(dir, courier, clock, { compactMinRecords: 500 }));
    const { spool, put } = await openReportingSpool(dir, () => manager, { segmentMaxBytes: 32 * 1024, journalMaxMessageBytes: 4_000 });
    let maxSegments = 0;
    for (let batch = 0; batch < 30; batch++) {
      await Promise.all(Array.from({ length: 100 }, (_, i) => put(`s${batch}x${i}`, i % 25 === 0 ? 5_000 : 300)));
      await until(() => manager.list().length < 100, 'the queue keeps up');
      maxSegments = Math.max(maxSegments, (await readdir(path.join(dir, 'segments'))).length);
    }
    await until(() => manager.list().length === 0, 'all delivered');
    // Reclaimed once the removals are durable (deferrable records: within a flush window or two).
    let segments = await readdir(path.join(dir, 'segments'));
    for (let i = 0; i < 100 && segments.length > 1; i++) {
      await settle();
      segments = await readdir(path.join(dir, 'segments'));
    }
    assert.ok(segments.length <= 1, `only the open segment remains: ${segments.join()}`);
    assert.ok(maxSegments < 20, `segments reclaimed while running (max ${maxSegments} for ~${Math.round((3000 * 400) / 32768)} written)`);
    assert.deepEqual(await readdir(path.join(dir, 'messages')), []);
    assert.ok(manager.stats().log.compactions >= 1, 'state log compacted');
    await spool.close();
    await settle();
    await manager.close();
    assert.deepEqual(await readdir(path.join(dir, 'segments')), []);
    const state = await readdir(path.join(dir, 'queue'));
    assert.equal(state.length, 1);
  });
});

void DEFAULT_QUEUE_LIMITS;

test('a message file gone when the courier reads it: a deferral, not a loss', { timeout: 60_000 }, async () => {
  await withSpool(async (dir) => {
    const clock = new FakeClock();
    let octets = 0;
    const courier = new FakeCourier(async (job) => {
      await rm(path.join(dir, 'messages', `${job.queueId}.msg`));
      try {
        for await (const piece of job.content()) octets += piece.length;
        return job.recipients.map(() => OK);
      } catch {
        return job.recipients.map(() => TEMP);
      }
    });
    const manager = await QueueManager.open(options(dir, courier, clock));
    const { spool, put } = await openReportingSpool(dir, () => manager);
    await put('gone1', 20_000);
    await until(() => manager.show('gone1')?.recipients[0].status === 'deferred', 'deferred');
    assert.equal(octets, 0, 'nothing read from a file that is not there');
    await spool.close();
    await manager.close();
  });
});

test('one delay notice per message: a recipient still in flight when the others were warned about gets none of its own', { timeout: 60_000 }, async () => {
  await withSpool(async (dir) => {
    const clock = new FakeClock();
    let releaseSlow: (() => void) | null = null;
    const courier = new FakeCourier((job) => {
      if (job.recipients[0].address.endsWith('@slow.example') && releaseSlow === null) {
        return new Promise((resolve) => (releaseSlow = () => resolve(job.recipients.map(() => TEMP))));
      }
      return job.recipients.map(() => TEMP);
    });
    const notices: QueueNotice[] = [];
    const manager = await QueueManager.open(options(dir, courier, clock, { onDsn: async (n) => void notices.push(n), limits: { deadAfterFailures: 1_000 } }));
    const { spool, put } = await openReportingSpool(dir, () => manager);
    await put('dw', 100, { receivedAt: new Date(clock.nowMs()).toISOString(), recipients: [{ address: 'a@fast.example' }, { address: 'b@slow.example' }] });
    await until(() => releaseSlow !== null && courier.jobs.length >= 2, 'both attempted, the slow one hanging');
    const fastDone = (): boolean => manager.show('dw')?.recipients[0].isInFlight === false;
    for (let h = 0; h < 5; h++) {
      await clock.advance(3_600_000);
      await until(fastDone, 'the fast recipient settled');
      await settle();
    }
    // The last hour's retry of the fast recipient (the one past delay_warning) can still be on its
    // way to the notice on a loaded machine: wait for it, bounded, then check it is the only one.
    await until(() => notices.length > 0, 'the delay notice for the fast recipient');
    await settle();
    assert.deepEqual(notices.map((n) => `${n.kind} ${n.recipients.map((r) => r.address).join(',')}`), ['delay a@fast.example']);
    (releaseSlow as unknown as () => void)();
    await until(() => manager.show('dw')?.recipients[1].status === 'deferred', 'the slow recipient deferred after 4 h');
    await clock.advance(3_600_000, () => manager.isIdle());
    assert.deepEqual(notices.map((n) => n.kind), ['delay'], 'no second delay notice for the same message');
    await spool.close();
    await manager.close();
  });
});

test('a writer gone before reporting a large message (its own file): found at once, not at the next start', { timeout: 60_000 }, async () => {
  await withSpool(async (dir) => {
    const clock = new FakeClock();
    const courier = new FakeCourier();
    const manager = await QueueManager.open(options(dir, courier, clock));
    // A writer whose reports never reach the manager (it died between commit and report).
    const { spool } = await openReportingSpool(dir, () => null, { writerId: 'w9', journalMaxMessageBytes: 1_000 });
    const { location } = await spool.commitEnvelope(envelopeFor('big1', 5_000), bodyFor('big1', 5_000));
    assert.match(location, /^messages\//);
    await settle();
    assert.equal(manager.show('big1'), null, 'nobody told the manager');
    await manager.writerGone('w9');
    await until(() => courier.delivered('big1') === 1, 'delivered after the writer was gone');
    await until(() => manager.list().length === 0, 'removed');
    assert.deepEqual(await readdir(path.join(dir, 'messages')), [], 'its file reclaimed');
    await spool.close();
    await manager.close();
  });
});
