// The queue-state log: group commit, replay, a torn tail ignored (and cut before new appends),
// compaction into a snapshot that replays to the same state.

import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { systemClock } from './schedule.ts';
import { QueueState } from './state.ts';
import type { MessageFacts, QueueRecord } from './state.ts';
import { DEFERRABLE_FLUSH_MS, QueueStateLog } from './state-log.ts';

function facts(queueId: string, offset: number): MessageFacts {
  return {
    queueId,
    location: `segments/000000000000001-w-000001.seg@${offset}`,
    arrivalMs: 0,
    size: 10,
    reversePath: 's@example.org',
    bodyType: '7BIT',
    smtputf8: false,
    recipients: [{ address: 'a@example.com' }, { address: 'b@example.com', notify: ['SUCCESS'] }],
  };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'portcullis-qlog-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function replay(dir: string): Promise<{ state: QueueState; log: QueueStateLog }> {
  const state = new QueueState();
  const log = await QueueStateLog.open({ spoolDir: dir, clock: systemClock }, (r) => state.apply(r));
  return { state, log };
}

test('appends made together share one flush, and replay gives them back in order', { timeout: 60_000 }, async () => {
  await withDir(async (dir) => {
    const { log } = await replay(dir);
    const records: QueueRecord[] = Array.from({ length: 200 }, (_, i) => ({ t: 'added', message: facts(`m${i}`, 19 + i * 100) }));
    await Promise.all(records.map((r) => log.append(r)));
    assert.ok(log.stats().flushes <= 2, `flushes: ${log.stats().flushes}`);
    await log.close();
    const seen: string[] = [];
    const again = await QueueStateLog.open({ spoolDir: dir, clock: systemClock }, (r) => {
      if (r.t === 'added') seen.push(r.message.queueId);
    });
    await again.close();
    assert.deepEqual(seen, records.map((r) => (r.t === 'added' ? r.message.queueId : '')));
  });
});

test('deferrable records ride with the next asked-for flush, or go after a short wait, in order', { timeout: 60_000 }, async () => {
  await withDir(async (dir) => {
    const { log } = await replay(dir);
    // Alone: no flush at once, one within the wait.
    const started = performance.now();
    let isDurable = false;
    const lone = log.append({ t: 'added', message: facts('d1', 19) }, { deferrable: true }).then(() => (isDurable = true));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(log.stats().flushes, 0, 'a deferrable record asks for no flush');
    assert.equal(isDurable, false);
    await lone;
    assert.ok(performance.now() - started >= DEFERRABLE_FLUSH_MS - 5, 'written after the wait');
    assert.equal(log.stats().flushes, 1);
    // With an asked-for record: both in one flush, the deferrable first (append order).
    const a = log.append({ t: 'added', message: facts('d2', 119) }, { deferrable: true });
    const b = log.append({ t: 'removed', queueId: 'd1' });
    await Promise.all([a, b]);
    assert.equal(log.stats().flushes, 2, 'one flush for both');
    // Still queued at close: written by close, not lost to a timer.
    const late = log.append({ t: 'removed', queueId: 'd2' }, { deferrable: true });
    await log.close();
    await late;
    const seen: string[] = [];
    const again = await QueueStateLog.open({ spoolDir: dir, clock: systemClock }, (r) => seen.push(r.t === 'added' ? `added ${r.message.queueId}` : `${r.t} ${'queueId' in r ? r.queueId : ''}`));
    assert.deepEqual(seen, ['added d1', 'added d2', 'removed d1', 'removed d2']);
    await again.close();
  });
});

test('a torn tail is ignored and cut off, so records appended after it are found', { timeout: 60_000 }, async () => {
  await withDir(async (dir) => {
    const first = await replay(dir);
    await first.log.append({ t: 'added', message: facts('a', 19) });
    await first.log.close();
    const file = path.join(dir, 'queue', (await readdir(path.join(dir, 'queue')))[0]);
    // Half a record: a length that promises more than is there.
    await appendFile(file, Buffer.from([0, 0, 1, 0, 1, 2, 3, 4, 123, 34]));
    const second = await replay(dir);
    assert.deepEqual([...second.state.messages.keys()], ['a']);
    await second.log.append({ t: 'added', message: facts('b', 500) });
    await second.log.close();
    const third = await replay(dir);
    assert.deepEqual([...third.state.messages.keys()], ['a', 'b']);
    await third.log.close();
  });
});

test('compaction: a mostly dead log becomes a snapshot that replays to the same state', { timeout: 60_000 }, async () => {
  await withDir(async (dir) => {
    const state = new QueueState();
    const log = await QueueStateLog.open({ spoolDir: dir, clock: systemClock, compactMinRecords: 100 }, (r) => state.apply(r));
    log.setSnapshotSource({ size: () => state.snapshotSize, records: () => state.snapshot() });
    const apply = async (r: QueueRecord): Promise<void> => {
      state.apply(r);
      await log.append(r);
    };
    for (let i = 0; i < 300; i++) {
      await apply({ t: 'added', message: facts(`m${i}`, 19 + i * 100) });
      if (i % 10 !== 0) await apply({ t: 'removed', queueId: `m${i}` });
    }
    await apply({ t: 'outcome', queueId: 'm0', outcomes: [{ index: 0, status: 'delivered', nextAttemptMs: 0, attemptMs: 5, reply: { code: 250, enhanced: null, lines: ['ok'] }, remoteMta: null }] });
    await apply({ t: 'hold', queueId: 'm10' });
    assert.ok(log.stats().compactions >= 1, 'compacted');
    const bytes = log.stats().fileBytes;
    await log.close();
    const files = await readdir(path.join(dir, 'queue'));
    assert.equal(files.length, 1, files.join());
    assert.equal((await stat(path.join(dir, 'queue', files[0]))).size, bytes);
    const again = await replay(dir);
    assert.deepEqual([...again.state.messages.keys()].sort(), [...state.messages.keys()].sort());
    assert.equal(again.state.messages.get('m0')?.recipients[0].status, 'delivered');
    assert.equal(again.state.messages.get('m10')?.isHeld, true);
    // The removed messages' segment offsets are remembered: recovery never finds them again.
    assert.equal(again.state.marks.get('segments/000000000000001-w-000001.seg'), 19 + 299 * 100);
    await again.log.close();
  });
});

test('a recipient once final is never reopened by a later record', () => {
  const state = new QueueState();
  state.apply({ t: 'added', message: facts('x', 19) });
  const r = { code: 250, enhanced: null, lines: ['ok'] };
  state.apply({ t: 'outcome', queueId: 'x', outcomes: [{ index: 0, status: 'delivered', nextAttemptMs: 0, attemptMs: 1, reply: r, remoteMta: null }] });
  state.apply({ t: 'outcome', queueId: 'x', outcomes: [{ index: 0, status: 'deferred', nextAttemptMs: 9, attemptMs: 2, reply: r, remoteMta: null }] });
  assert.equal(state.messages.get('x')?.recipients[0].status, 'delivered');
});
