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
import { openMessage, scanSegmentFrom } from './reader.ts';

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
