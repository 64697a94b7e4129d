// What the queue needs from the spool: the writer reports each segment it seals; a segment can
// be scanned from a known record on; a message streams in bounded pieces and a damaged one
// throws before its last piece.

import assert from 'node:assert/strict';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { bodyFor, makeEnvelope } from '../../test/helpers/spool-crash-child.ts';
import { JournalSpool } from './journal.ts';
import { openMessage, scanSegmentFrom, SpoolContentReader } from './reader.ts';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'portcullis-spool-q-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('onSealed names every segment once the writer leaves it (rotation and close); scanSegmentFrom reads on from a record', async () => {
  await withDir(async (dir) => {
    const sealed: string[] = [];
    const told: string[] = [];
    const spool = await JournalSpool.open({
      dir,
      journalMaxMessageBytes: 4096,
      segmentMaxBytes: 8192,
      writerId: 'w',
      onSealed: (s) => sealed.push(s),
      onCommitted: (c, envelope) => told.push(`${envelope.queueId} ${c.location}`),
    });
    // Committed together: one batch, told in the order of the records.
    const locations = (await Promise.all(Array.from({ length: 12 }, (_, i) => spool.commitEnvelope(makeEnvelope(`m${i}`, 1000), bodyFor(`m${i}`, 1000))))).map((c) => c.location);
    assert.deepEqual(told, locations.map((l, i) => `m${i} ${l}`));
    const segmentsUsed = [...new Set(locations.map((l) => l.split('@')[0]))];
    assert.deepEqual(sealed, segmentsUsed.slice(0, -1), 'rotated-away segments sealed in order');
    await spool.close();
    assert.deepEqual(sealed, segmentsUsed, 'the last one sealed at close');
    const [file, offset] = locations[1].split('@');
    const ids: string[] = [];
    for await (const e of scanSegmentFrom(dir, file, Number(offset))) ids.push(e.envelope.queueId);
    assert.deepEqual(ids, locations.map((l, i) => [l, i] as const).filter(([l, i]) => l.startsWith(file) && i >= 1).map(([, i]) => `m${i}`));
  });
});

test('openMessage streams a large message in bounded pieces; a damaged byte throws before the end', async () => {
  await withDir(async (dir) => {
    const spool = await JournalSpool.open({ dir, journalMaxMessageBytes: 1000, segmentMaxBytes: 1 << 20, writerId: 'w' });
    const size = 3 * 1024 * 1024 + 17;
    const { location } = await spool.commitEnvelope(makeEnvelope('big', size), bodyFor('big', size));
    await spool.close();
    const opened = await openMessage(dir, 'big', location);
    assert.ok(opened);
    const pieces: Buffer[] = [];
    for await (const p of opened.content()) pieces.push(p);
    assert.ok(pieces.every((p) => p.length <= 256 * 1024));
    assert.ok(Buffer.concat(pieces).equals(Buffer.concat(bodyFor('big', size))));
    assert.equal(await openMessage(dir, 'other', location), null, 'a message file serves only its own id');

    const fh = await open(path.join(dir, 'messages', 'big.msg'), 'r+');
    await fh.write(Buffer.from('#'), 0, 1, 5000);
    await fh.close();
    let got = 0;
    await assert.rejects(async () => {
      for await (const p of opened.content()) got += p.length;
    }, /checksum/);
    assert.ok(got < size, 'the last piece is withheld');
  });
});

async function readAll(pieces: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const p of pieces) out.push(p);
  return Buffer.concat(out);
}

test('SpoolContentReader: any size reads back as stored, from segments and message files, through one open handle per segment', async () => {
  await withDir(async (dir) => {
    const spool = await JournalSpool.open({ dir, journalMaxMessageBytes: 600_000, segmentMaxBytes: 4 << 20, writerId: 'w' });
    // Around the first read (64 KiB) and the streamed piece (256 KiB), and past the journal limit.
    const sizes = [0, 1, 1000, 64 * 1024 - 200, 64 * 1024, 64 * 1024 + 1, 256 * 1024 + 3, 590_000, 700_000];
    const stored = await Promise.all(sizes.map((size, i) => spool.commitEnvelope(makeEnvelope(`c${i}`, size), bodyFor(`c${i}`, size))));
    await spool.close();
    const reader = new SpoolContentReader(dir);
    const got = await Promise.all(stored.map((c, i) => readAll(reader.content(`c${i}`, c.location))));
    for (const [i, size] of sizes.entries()) assert.ok(got[i].equals(Buffer.concat(bodyFor(`c${i}`, size))), `size ${size}`);
    // A size hint (the queue's) only sizes the first read: right, too small or too large, the same bytes.
    for (const [i, size] of sizes.entries()) {
      for (const hint of [size, 0, size * 2 + 100_000]) {
        assert.ok((await readAll(reader.content(`c${i}`, stored[i].location, hint))).equals(got[i]), `size ${size}, hint ${hint}`);
      }
    }
    const segments = new Set(stored.map((c) => c.location.split('@')[0]).filter((f) => f.startsWith('segments/')));
    assert.equal(reader.openFiles, segments.size, 'one handle per segment; message files are not kept open');
    await reader.close();
    assert.equal(reader.openFiles, 0);
  });
});

test('SpoolContentReader: a damaged byte, another id, a missing file or a bad location throw; the last piece is withheld', async () => {
  await withDir(async (dir) => {
    const spool = await JournalSpool.open({ dir, journalMaxMessageBytes: 1 << 20, segmentMaxBytes: 4 << 20, writerId: 'w' });
    const small = await spool.commitEnvelope(makeEnvelope('small', 3000), bodyFor('small', 3000));
    const big = await spool.commitEnvelope(makeEnvelope('big', 600_000), bodyFor('big', 600_000));
    await spool.close();
    const reader = new SpoolContentReader(dir);
    await assert.rejects(readAll(reader.content('other', small.location)), /not message other/);
    await assert.rejects(readAll(reader.content('small', 'segments/../../etc/passwd@20')), /not a spool location/);
    await assert.rejects(readAll(reader.content('small', 'messages/big.msg@20')), /not this message's file/);
    await assert.rejects(readAll(reader.content('gone', 'messages/gone.msg@20')), /ENOENT/);
    const [file, at] = big.location.split('@');
    const fh = await open(path.join(dir, file), 'r+');
    await fh.write(Buffer.from('#'), 0, 1, Number(at) + 500_000);
    await fh.write(Buffer.from('#'), 0, 1, Number(small.location.split('@')[1]) + 2000);
    await fh.close();
    let got = 0;
    await assert.rejects(async () => {
      for await (const p of reader.content('big', big.location)) got += p.length;
    }, /checksum/);
    assert.ok(got < 600_000, 'the last piece is withheld');
    await assert.rejects(readAll(reader.content('small', small.location)), /checksum/);
    await reader.close();
  });
});

test('SpoolContentReader: at most maxOpen segment handles, least recently used closed first; forget closes one', async () => {
  await withDir(async (dir) => {
    const stored: Array<{ id: string; location: string }> = [];
    for (let s = 0; s < 4; s++) {
      const spool = await JournalSpool.open({ dir, journalMaxMessageBytes: 1 << 20, segmentMaxBytes: 4 << 20, writerId: `w${s}` });
      const { location } = await spool.commitEnvelope(makeEnvelope(`m${s}`, 500), bodyFor(`m${s}`, 500));
      stored.push({ id: `m${s}`, location });
      await spool.close();
    }
    const reader = new SpoolContentReader(dir, { maxOpen: 2 });
    for (let round = 0; round < 3; round++) {
      for (const { id, location } of stored) {
        assert.ok((await readAll(reader.content(id, location))).equals(Buffer.concat(bodyFor(id, 500))));
        assert.ok(reader.openFiles <= 2, `${reader.openFiles} open`);
      }
    }
    await reader.forget(stored[3].location.split('@')[0]);
    assert.equal(reader.openFiles, 1);
    await reader.close();
  });
});
