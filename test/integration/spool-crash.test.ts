// kill -9 in the middle of group commits: a child commits in 8 concurrent loops and prints each
// acknowledged queue id; the parent kills it after a few hundred and scans the spool. Every
// acknowledged message must be there with its exact content, and nothing partial may surface.
// A SIGKILL keeps the page cache, so this proves the ack order and the reader's handling of
// half-written batches, not the disk's flush (that is fdatasync's job; see docs/spool.md).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import type { SpoolDamage } from '../../src/spool/reader.ts';
import { bodyFor } from '../helpers/spool-crash-child.ts';

const CHILD = fileURLToPath(new URL('../helpers/spool-crash-child.ts', import.meta.url));
const KILL_AFTER_ACKS = 400;
const ROUNDS = 3;

async function crashOnce(dir: string, idPrefix: string): Promise<Set<string>> {
  const child = spawn(process.execPath, [CHILD, 'crash', dir, idPrefix], { stdio: ['ignore', 'pipe', 'pipe'] });
  const acked = new Set<string>();
  let partial = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr += text;
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${acked.size} acks in time; stderr: ${stderr}`)), 15_000);
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      const lines = (partial + text).split('\n');
      // A line without its newline yet is not an acknowledgement we may count on.
      partial = lines.pop() ?? '';
      for (const line of lines) if (line.startsWith('ACK ')) acked.add(line.slice(4));
      if (acked.size >= KILL_AFTER_ACKS && child.pid !== undefined) {
        clearTimeout(timer);
        process.kill(child.pid, 'SIGKILL');
        resolve();
      }
    });
    child.on('exit', () => reject(new Error(`child exited before the kill; stderr: ${stderr}`)));
  });
  assert.equal(await exited, 'SIGKILL');
  return acked;
}

test('every acknowledged message survives kill -9, and nothing partial is returned', { timeout: 60_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'portcullis-spool-crash-'));
  try {
    const acked = new Set<string>();
    for (let round = 0; round < ROUNDS; round++) {
      // Each round restarts a writer in the same dir, next to the killed writers' segments
      // (torn tails included), as a restart after a crash does.
      for (const id of await crashOnce(dir, `r${round}n`)) acked.add(id);

      const damage: SpoolDamage[] = [];
      const seen = new Map<string, string>();
      for await (const entry of scanSpool(dir, { onDamage: (d) => damage.push(d) })) {
        const { queueId, size } = entry.envelope;
        assert.ok(!seen.has(queueId), `${queueId} returned twice`);
        seen.set(queueId, entry.location);
        // Acknowledged or not, whatever is returned must be whole.
        const message = await readMessage(dir, queueId, entry.location);
        assert.ok(message, `${queueId} readable`);
        assert.ok(message.content.equals(Buffer.concat(bodyFor(queueId, size))), `${queueId} content intact`);
      }
      const missing = [...acked].filter((id) => !seen.has(id));
      assert.deepEqual(missing, [], `acknowledged but lost after round ${round}`);
      // Only an unfinished write may be damaged, never a record in the middle of a segment.
      for (const d of damage) assert.equal(d.kind, 'torn', JSON.stringify(d));
    }
    assert.ok((await readdir(path.join(dir, 'messages'))).length > 0, 'large-message path exercised');
    assert.ok((await readdir(path.join(dir, 'segments'))).length > ROUNDS, 'rotation exercised');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
