// A real write failure in the middle of a group commit: the child runs under a file size limit
// (ulimit -f), so a batch's first records land whole on disk and a later one fails with EFBIG.
// Every commit of that batch must be rejected, and none of them may be found by recovery.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { bodyFor } from '../../test/helpers/spool-crash-child.ts';
import { FILE_HEADER } from './format.ts';
import { readMessage, scanSpool } from './reader.ts';
import type { SpoolDamage } from './reader.ts';

const CHILD = fileURLToPath(new URL('../../test/helpers/spool-crash-child.ts', import.meta.url));

test('a failed flush rejects its whole batch and leaves none of it on disk', { skip: process.platform === 'win32', timeout: 20_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'portcullis-spool-fsize-'));
  try {
    // 128 blocks: 64 KiB under dash (512-byte blocks), 128 KiB under bash; 20 records of 10 KB
    // pass either.
    const child = spawn('/bin/sh', ['-c', 'ulimit -f 128 && exec "$0" "$@"', process.execPath, CHILD, 'fsize', dir], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      out += text;
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.equal(code, 0, out);

    const lines = out.trim().split('\n');
    const acked = lines.filter((l) => l.startsWith('ACK ')).map((l) => l.split(' ')[1]);
    const rejected = lines.filter((l) => l.startsWith('REJ ')).map((l) => l.split(' '));
    assert.deepEqual(acked, ['after0', 'after1']);
    assert.equal(rejected.length, 20);
    for (const [, , errCode] of rejected) assert.equal(errCode, 'SPOOL_WRITE_FAILED');
    assert.match(lines.at(-1) ?? '', /^DONE .*"failedCommits":20/);

    const damage: SpoolDamage[] = [];
    const found: string[] = [];
    for await (const entry of scanSpool(dir, { onDamage: (d) => damage.push(d) })) {
      found.push(entry.envelope.queueId);
      const message = await readMessage(dir, entry.envelope.queueId, entry.location);
      assert.ok(message?.content.equals(Buffer.concat(bodyFor(entry.envelope.queueId, entry.envelope.size))));
    }
    // Durability: the failed batch's complete records were cut away, not just its torn tail.
    assert.deepEqual(found, ['after0', 'after1']);
    assert.deepEqual(damage, []);

    const segments = (await readdir(path.join(dir, 'segments'))).sort();
    assert.equal(segments.length, 2);
    assert.equal((await stat(path.join(dir, 'segments', segments[0]))).size, FILE_HEADER.length);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
