// Durable file system steps shared by the spool and the Maildir courier: fsync of a directory
// (so a new or removed name survives a crash) and mkdir -p that fsyncs the parent of every
// directory it created. Never writes file contents and never decides names; callers do.
// POSIX: a file's data and its directory entry are made durable by separate fsyncs.

import { mkdir, open } from 'node:fs/promises';
import path from 'node:path';

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
