// Durable file system steps shared by the spool, the queue's state log and the Maildir courier:
// a write that really writes every byte, fsync of a directory (so a new or removed name survives
// a crash) and mkdir -p that fsyncs the parent of every directory it created. Never decides what
// to write or names; callers do.
// POSIX: a file's data and its directory entry are made durable by separate fsyncs.

import { mkdir, open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';

/** writev takes at most IOV_MAX (1024) buffers per call on Linux. */
const MAX_WRITEV_BUFFERS = 512;

/**
 * pwritev until every byte is written at `position`: libuv reports a short write (at a full disk
 * or a file size limit) as success and the error only on the next attempt. A write that makes no
 * progress throws an ENOSPC error, as the next attempt would.
 */
export async function writeAll(fh: FileHandle, chunks: readonly Buffer[], position: number): Promise<void> {
  let pending = chunks;
  let at = position;
  while (pending.length > 0) {
    const slice = pending.length > MAX_WRITEV_BUFFERS ? pending.slice(0, MAX_WRITEV_BUFFERS) : pending;
    const { bytesWritten } = await fh.writev(slice as Buffer[], at);
    at += bytesWritten;
    let skip = bytesWritten;
    let i = 0;
    while (i < pending.length && skip >= pending[i].length) {
      skip -= pending[i].length;
      i++;
    }
    if (i === 0 && skip === 0 && pending[0].length > 0) throw Object.assign(new Error('write made no progress'), { code: 'ENOSPC' });
    pending = i < pending.length && skip > 0 ? [pending[i].subarray(skip), ...pending.slice(i + 1)] : pending.slice(i);
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** mkdir -p, then fsync the parent of every directory it created, so that the directory
 *  itself cannot vanish in a crash. */
export async function ensureDurableDir(dir: string, mode = 0o700): Promise<void> {
  const resolved = path.resolve(dir);
  const firstCreated = await mkdir(resolved, { mode, recursive: true });
  if (firstCreated === undefined) return;
  const created: string[] = [];
  for (let at = resolved; ; at = path.dirname(at)) {
    created.push(at);
    if (at === path.resolve(firstCreated) || at === path.dirname(at)) break;
  }
  for (const at of created) await fsyncDir(path.dirname(at));
}
