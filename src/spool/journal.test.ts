// The journal writer and the reader together, on a real file system in a temp dir: round trips,
// batching, rotation, the large-message path, damage on disk, and several writers in one dir.

import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readdir, readFile, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { bodyFor, makeEnvelope } from '../../test/helpers/spool-crash-child.ts';
import { encodeRecord, FILE_HEADER } from './format.ts';
import { JournalSpool, SpoolError } from './journal.ts';
import type { JournalSpoolOptions } from './journal.ts';
import { readMessage, removeStaleTmp, scanSpool } from './reader.ts';
import type { SpoolDamage, SpoolEntry } from './reader.ts';

let dir = '';
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'portcullis-spool-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function openSpool(overrides: Partial<JournalSpoolOptions> = {}): Promise<JournalSpool> {
  return JournalSpool.open({
    dir,
    journalMaxMessageBytes: 65_536,
    segmentMaxBytes: 1024 * 1024,
    writerId: 'test',
    ...overrides,
  });
}

async function commit(spool: JournalSpool, queueId: string, size: number): Promise<void> {
  await spool.commitEnvelope(makeEnvelope(queueId, size), bodyFor(queueId, size));
}

async function scan(): Promise<{ entries: SpoolEntry[]; damage: SpoolDamage[] }> {
  const entries: SpoolEntry[] = [];
  const damage: SpoolDamage[] = [];
  for await (const entry of scanSpool(dir, { onDamage: (d) => damage.push(d) })) entries.push(entry);
  return { entries, damage };
}

async function assertContent(entry: SpoolEntry): Promise<void> {
  const message = await readMessage(dir, entry.envelope.queueId, entry.location);
  assert.ok(message, `${entry.envelope.queueId} readable at ${entry.location}`);
  assert.deepEqual(message.envelope, entry.envelope);
  assert.ok(message.content.equals(Buffer.concat(bodyFor(entry.envelope.queueId, entry.envelope.size))));
}

async function segmentFiles(): Promise<string[]> {
  return (await readdir(path.join(dir, 'segments'))).sort();
}

describe('JournalSpool', () => {
  test('a commit resolves to where the record is: the location scanSpool gives, readable at once', async () => {
    const spool = await openSpool({ journalMaxMessageBytes: 1000 });
    const sizes = [100, 200, 5000, 300];
    const committed = await Promise.all(sizes.map((n, i) => spool.commitEnvelope(makeEnvelope(`q${i}`, n), bodyFor(`q${i}`, n))));
    await spool.close();
    const { entries } = await scan();
    const byId = new Map(entries.map((e) => [e.envelope.queueId, e.location]));
    for (const [i, c] of committed.entries()) {
      assert.equal(c.queueId, `q${i}`);
      assert.equal(c.location, byId.get(c.queueId), `${c.queueId}: the same location as the scan`);
      const m = await readMessage(dir, c.queueId, c.location);
      assert.ok(m?.content.equals(Buffer.concat(bodyFor(c.queueId, sizes[i]))));
    }
    assert.match(committed[2].location, /^messages\/q2\.msg@\d+$/);
    assert.match(committed[0].location, /^segments\/.*\.seg@\d+$/);
  });

  test('creates the layout, every file starting with the format header', async () => {
    const spool = await openSpool();
    await commit(spool, 'q1', 100);
    await spool.close();
    assert.deepEqual((await readdir(dir)).sort(), ['messages', 'segments', 'tmp']);
    const [segment] = await segmentFiles();
    assert.match(segment, /^[0-9]{15}-test-000001\.seg$/);
    const bytes = await readFile(path.join(dir, 'segments', segment));
    assert.ok(bytes.subarray(0, FILE_HEADER.length).equals(Buffer.from('PORTCULLIS-SPOOL 1\n')));
  });

  test('many concurrent commits round-trip and share flushes', async () => {
    const spool = await openSpool();
    // 20 committers, 10 messages each, one after the other: like 20 SMTP sessions.
    await Promise.all(
      Array.from({ length: 20 }, async (_, c) => {
        for (let i = 0; i < 10; i++) await commit(spool, `m${c}x${i}`, 1 + ((c * 31 + i * 97) % 3000));
      }),
    );
    const stats = spool.stats();
    await spool.close();
    assert.equal(stats.commits, 200);
    assert.ok(stats.flushes < 200 / 4, `group commit batched: ${stats.flushes} flushes for 200 commits`);
    assert.equal(stats.segments, 1);

    const { entries, damage } = await scan();
    assert.deepEqual(damage, []);
    assert.equal(entries.length, 200);
    assert.equal(new Set(entries.map((e) => e.envelope.queueId)).size, 200);
    for (const entry of entries) await assertContent(entry);
  });

  test('commits made in one turn go out in one flush', async () => {
    const spool = await openSpool();
    await Promise.all(Array.from({ length: 50 }, (_, i) => commit(spool, `t${i}`, 200)));
    assert.equal(spool.stats().flushes, 1);
    await spool.close();
  });

  test('an empty body is a valid message', async () => {
    const spool = await openSpool();
    await spool.commitEnvelope(makeEnvelope('empty', 0), []);
    await spool.close();
    const message = await readMessage(dir, 'empty');
    assert.equal(message?.content.length, 0);
  });

  test('rotates segments before they pass segmentMaxBytes', async () => {
    const spool = await openSpool({ segmentMaxBytes: 4096 });
    for (let i = 0; i < 40; i++) await commit(spool, `r${i}`, 500);
    // A batch spanning a segment boundary is split across two segments.
    await Promise.all(Array.from({ length: 40 }, (_, i) => commit(spool, `b${i}`, 500)));
    const stats = spool.stats();
    await spool.close();

    const files = await segmentFiles();
    assert.equal(files.length, stats.segments);
    assert.ok(files.length >= 80 / 5, `${files.length} segments`);
    for (const file of files) assert.ok((await stat(path.join(dir, 'segments', file))).size <= 4096);
    const { entries, damage } = await scan();
    assert.deepEqual(damage, []);
    assert.equal(entries.length, 80);
    for (const entry of entries) await assertContent(entry);
  });

  test('a record larger than a segment gets a segment of its own', async () => {
    const spool = await openSpool({ segmentMaxBytes: 1000, journalMaxMessageBytes: 10_000 });
    await commit(spool, 'small', 10);
    await commit(spool, 'big', 5000);
    await commit(spool, 'small2', 10);
    await spool.close();
    assert.equal((await segmentFiles()).length, 3);
    const { entries } = await scan();
    assert.deepEqual(entries.map((e) => e.envelope.queueId), ['small', 'big', 'small2']);
  });

  test('large messages get a file of their own in messages/', async () => {
    const spool = await openSpool({ journalMaxMessageBytes: 1000 });
    await commit(spool, 'small', 1000);
    await commit(spool, 'large', 1001);
    await Promise.all([commit(spool, 'large2', 300_000), commit(spool, 'small2', 10)]);
    const stats = spool.stats();
    await spool.close();
    assert.equal(stats.largeMessages, 2);
    assert.equal(stats.commits, 4);
    assert.deepEqual((await readdir(path.join(dir, 'messages'))).sort(), ['large.msg', 'large2.msg']);
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);

    const { entries, damage } = await scan();
    assert.deepEqual(damage, []);
    assert.deepEqual(entries.map((e) => e.envelope.queueId).sort(), ['large', 'large2', 'small', 'small2']);
    assert.equal(entries.find((e) => e.envelope.queueId === 'large')?.location, 'messages/large.msg@19');
    for (const entry of entries) await assertContent(entry);
    // Without a location: the message file, then the segments.
    for (const queueId of ['large', 'small2']) {
      const message = await readMessage(dir, queueId);
      assert.equal(message?.envelope.queueId, queueId);
    }
    assert.equal(await readMessage(dir, 'absent'), null);
  });

  test('a large message never replaces an existing one with the same id', async () => {
    const spool = await openSpool({ journalMaxMessageBytes: 10 });
    await commit(spool, 'dup', 100);
    await assert.rejects(commit(spool, 'dup', 200), { code: 'SPOOL_WRITE_FAILED' });
    assert.equal(spool.stats().failedCommits, 1);
    await spool.close();
    assert.equal((await readMessage(dir, 'dup'))?.content.length, 100);
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), []);
  });

  test('refuses what it cannot store faithfully, and commits after close', async () => {
    const spool = await openSpool();
    // Security: the queue id names files.
    for (const queueId of ['../evil', 'a/b', '', 'x'.repeat(65), 'dot.ted']) {
      await assert.rejects(spool.commitEnvelope(makeEnvelope(queueId, 1), [Buffer.from('x')]), {
        code: 'SPOOL_BAD_MESSAGE',
      });
    }
    await assert.rejects(spool.commitEnvelope(makeEnvelope('sz', 5), [Buffer.from('four')]), { code: 'SPOOL_BAD_MESSAGE' });
    await spool.close();
    await assert.rejects(commit(spool, 'late', 10), (err: unknown) => {
      assert.ok(err instanceof SpoolError);
      assert.equal(err.code, 'SPOOL_CLOSED');
      return true;
    });
    assert.deepEqual(await segmentFiles(), []);
  });

  test('refuses unsafe writer ids and nonsense sizes', async () => {
    await assert.rejects(openSpool({ writerId: '../x' }), TypeError);
    await assert.rejects(openSpool({ writerId: '' }), TypeError);
    await assert.rejects(openSpool({ segmentMaxBytes: 10 }), TypeError);
    await assert.rejects(openSpool({ journalMaxMessageBytes: -1 }), TypeError);
  });

  test('close waits for queued commits', async () => {
    const spool = await openSpool({ journalMaxMessageBytes: 100 });
    const pending = [commit(spool, 'p1', 10), commit(spool, 'p2', 5000)];
    await spool.close();
    await Promise.all(pending);
    assert.equal((await scan()).entries.length, 2);
  });

  test('two writers in one dir never collide', async () => {
    const a = await openSpool({ writerId: 'w1', segmentMaxBytes: 8192, journalMaxMessageBytes: 3000 });
    const b = await openSpool({ writerId: 'w2', segmentMaxBytes: 8192, journalMaxMessageBytes: 3000 });
    await Promise.all(
      [a, b].flatMap((spool, w) =>
        Array.from({ length: 5 }, async (_, c) => {
          for (let i = 0; i < 20; i++) await commit(spool, `w${w}c${c}i${i}`, 10 + ((i * 211) % 4000));
        }),
      ),
    );
    const [statsA, statsB] = [a.stats(), b.stats()];
    await Promise.all([a.close(), b.close()]);
    const files = await segmentFiles();
    assert.equal(files.length, statsA.segments + statsB.segments);
    assert.equal(files.filter((f) => f.includes('-w1-')).length, statsA.segments);
    const { entries, damage } = await scan();
    assert.deepEqual(damage, []);
    assert.equal(entries.length, 200);
    assert.equal(new Set(entries.map((e) => e.envelope.queueId)).size, 200);
    for (const entry of entries) await assertContent(entry);
  });

  test('a restarted writer reusing its id in the same millisecond picks fresh names', async () => {
    const first = await openSpool({ writerId: 'same' });
    const second = await openSpool({ writerId: 'same' });
    await commit(first, 'one', 10);
    await commit(second, 'two', 10);
    await Promise.all([first.close(), second.close()]);
    assert.equal((await segmentFiles()).length, 2);
    assert.equal((await scan()).entries.length, 2);
  });
});

describe('recovery from damage', () => {
  async function writeTen(): Promise<string> {
    const spool = await openSpool();
    for (let i = 0; i < 10; i++) await commit(spool, `d${i}`, 1000 + i);
    await spool.close();
    const [segment] = await segmentFiles();
    return path.join(dir, 'segments', segment);
  }

  test('a torn trailing record is ignored', async () => {
    const file = await writeTen();
    await truncate(file, (await stat(file)).size - 7);
    await appendFile(file, Buffer.from('garbage!'));
    const { entries, damage } = await scan();
    assert.deepEqual(entries.map((e) => e.envelope.queueId), ['d0', 'd1', 'd2', 'd3', 'd4', 'd5', 'd6', 'd7', 'd8']);
    assert.deepEqual(damage.map((d) => [d.kind, d.reason]), [['torn', 'record checksum mismatch']]);
    for (const entry of entries) await assertContent(entry);
  });

  test('a record cut short, or half a header, is reported as torn', async () => {
    const file = await writeTen();
    const size = (await stat(file)).size;
    await truncate(file, size - 500);
    let { entries, damage } = await scan();
    assert.equal(entries.length, 9);
    assert.deepEqual(
      damage.map((d) => [d.kind, d.reason]),
      [['torn', 'record cut short']],
    );
    await truncate(file, FILE_HEADER.length + 5);
    ({ entries, damage } = await scan());
    assert.equal(entries.length, 0);
    assert.deepEqual(
      damage.map((d) => [d.kind, d.reason]),
      [['torn', 'short record header']],
    );
  });

  test('a checksum mismatch skips that record only', async () => {
    const file = await writeTen();
    const bytes = await readFile(file);
    const { entries: before } = await scan();
    const d4 = before[4].location;
    const offset = Number(d4.slice(d4.indexOf('@') + 1));
    bytes[offset + 600] ^= 0x01; // inside d4's body
    await writeFile(file, bytes);
    const { entries, damage } = await scan();
    assert.deepEqual(
      entries.map((e) => e.envelope.queueId),
      ['d0', 'd1', 'd2', 'd3', 'd5', 'd6', 'd7', 'd8', 'd9'],
    );
    assert.deepEqual(damage, [
      { file: `segments/${path.basename(file)}`, offset, kind: 'corrupt', reason: 'record checksum mismatch' },
    ]);
    assert.equal(await readMessage(dir, 'd4', d4), null);
    assert.equal(await readMessage(dir, 'd4'), null);
  });

  test('a damaged record header makes the rest of its segment unreadable, not misread', async () => {
    const file = await writeTen();
    const bytes = await readFile(file);
    const { entries: before } = await scan();
    const offset = Number(before[3].location.split('@')[1]);
    bytes[offset + 5] ^= 0x40; // envelope length
    await writeFile(file, bytes);
    const { entries, damage } = await scan();
    assert.deepEqual(entries.map((e) => e.envelope.queueId), ['d0', 'd1', 'd2']);
    assert.deepEqual(damage.map((d) => [d.kind, d.offset]), [['torn', offset]]);
  });

  test('forged-record-in-body: a record carried inside a body is never returned', async () => {
    // Security: message content is the peer's; a body holding a well-formed record (envelope of
    // the attacker's choosing, valid CRC) must not surface, even when the real record around it
    // is damaged and a naive reader would search for the next magic.
    const forged = encodeRecord({ ...makeEnvelope('forged', 3), recipients: [{ address: 'victim@x' }] }, [
      Buffer.from('pwn'),
    ]);
    const carrier = Buffer.concat([Buffer.from('prefix'), ...forged.chunks, Buffer.from('suffix')]);
    const spool = await openSpool();
    await commit(spool, 'before', 10);
    await spool.commitEnvelope(makeEnvelope('carrier', carrier.length), [carrier]);
    await commit(spool, 'after', 10);
    await spool.close();

    let { entries } = await scan();
    assert.deepEqual(entries.map((e) => e.envelope.queueId), ['before', 'carrier', 'after']);

    const [segment] = await segmentFiles();
    const file = path.join(dir, 'segments', segment);
    const bytes = await readFile(file);
    const offset = Number(entries[1].location.split('@')[1]);
    bytes[offset] ^= 0xff; // the carrier's magic
    await writeFile(file, bytes);
    ({ entries } = await scan());
    assert.deepEqual(entries.map((e) => e.envelope.queueId), ['before']);
    assert.equal(await readMessage(dir, 'forged'), null);
    const forgedAt = bytes.indexOf(forged.chunks[0]);
    assert.ok(forgedAt > offset);
  });

  test('files of another format or a torn file header are skipped', async () => {
    const spool = await openSpool({ journalMaxMessageBytes: 10 });
    await commit(spool, 'ok', 100);
    await spool.close();
    await writeFile(path.join(dir, 'segments', '000000000000001-x-000001.seg'), 'PORTCULLIS-SPOOL 2\nwhatever');
    await writeFile(path.join(dir, 'segments', '000000000000002-x-000001.seg'), 'PORTCULLIS-SP');
    await writeFile(path.join(dir, 'segments', 'not-a-segment.txt'), 'ignored');
    const { entries, damage } = await scan();
    assert.deepEqual(entries.map((e) => e.envelope.queueId), ['ok']);
    assert.deepEqual(damage.map((d) => d.kind), ['foreign', 'torn']);
  });

  test('a message file must hold the id in its name', async () => {
    const spool = await openSpool({ journalMaxMessageBytes: 10 });
    await commit(spool, 'real', 100);
    await spool.close();
    const bytes = await readFile(path.join(dir, 'messages', 'real.msg'));
    await writeFile(path.join(dir, 'messages', 'other.msg'), bytes);
    const { entries, damage } = await scan();
    assert.deepEqual(entries.map((e) => e.envelope.queueId), ['real']);
    assert.deepEqual(damage.map((d) => d.reason), ['queue id differs from the file name']);
    assert.equal(await readMessage(dir, 'real', 'messages/other.msg@19'), null);
    assert.equal(await readMessage(dir, 'other'), null);
  });

  test('readMessage refuses locations that are not ours', async () => {
    const spool = await openSpool();
    await commit(spool, 'q', 10);
    await spool.close();
    const { entries } = await scan();
    const location = entries[0].location;
    assert.ok(await readMessage(dir, 'q', location));
    assert.equal(await readMessage(dir, 'other', location), null);
    for (const bad of ['../etc/passwd@0', 'segments/../../x.seg@19', `${location}0`, location.replace(/@.*/, '@0')]) {
      assert.equal(await readMessage(dir, 'q', bad), null, bad);
    }
    assert.equal(await readMessage(dir, '../q'), null);
  });

  test('tmp/ leftovers are ignored by scans and removed once stale', async () => {
    const spool = await openSpool({ journalMaxMessageBytes: 10 });
    await commit(spool, 'kept', 100);
    await spool.close();
    const half = path.join(dir, 'tmp', 'half.1234');
    await writeFile(half, Buffer.concat([FILE_HEADER, Buffer.from('partial')]));
    const fresh = path.join(dir, 'tmp', 'fresh.1234');
    await writeFile(fresh, 'x');
    const nowMs = Date.now();
    await utimes(half, new Date(nowMs - 7_200_000), new Date(nowMs - 7_200_000));
    const { entries, damage } = await scan();
    assert.deepEqual(entries.map((e) => e.envelope.queueId), ['kept']);
    assert.deepEqual(damage, []);
    assert.equal(await removeStaleTmp(dir, { olderThanMs: 3_600_000, nowMs }), 1);
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), ['fresh.1234']);
  });

  test('a missing spool dir scans as empty', async () => {
    assert.deepEqual((await (async () => {
      const out = [];
      for await (const e of scanSpool(path.join(dir, 'nope'))) out.push(e);
      return out;
    })()), []);
  });
});
