// A real, small file system that a test can fill to the brim: a tmpfs mounted on a temp dir
// (needs root; null otherwise, and the caller skips). Unmounts and removes only what it mounted,
// also if the test process exits early.

import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export type SmallDisk = {
  /** The mount point. */
  dir: string;
  /** Writes a filler file until the file system answers ENOSPC. */
  fill(): void;
  /** Removes the filler: the space is back. */
  free(): void;
  cleanup(): void;
  /** Remounts it read-only (true) or read-write: EROFS even for root, whom modes do not stop. */
  setReadOnly(isReadOnly: boolean): void;
};

const FILL_CHUNKS = [65_536, 4096, 512, 1];

export function mountSmallDisk(sizeBytes: number): SmallDisk | null {
  if (process.getuid?.() !== 0) return null;
  const parent = mkdtempSync(path.join(os.tmpdir(), 'portcullis-disk-'));
  const dir = path.join(parent, 'mnt');
  mkdirSync(dir);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0700`, 'portcullis-test', dir], { stdio: 'ignore' });
  } catch {
    rmSync(parent, { recursive: true, force: true });
    return null;
  }
  let isMounted = true;
  const filler = path.join(dir, 'filler');
  const cleanup = (): void => {
    if (isMounted) {
      try {
        execFileSync('umount', [dir], { stdio: 'ignore' });
      } catch {
        execFileSync('umount', ['-l', dir], { stdio: 'ignore' }); // still busy: detach it
      }
      isMounted = false;
    }
    rmSync(parent, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  return {
    dir,
    fill() {
      const fd = openSync(filler, 'a');
      try {
        for (const size of FILL_CHUNKS) {
          const chunk = Buffer.alloc(size, 0x78);
          // Bounded: the disk is small; each chunk size is written until the first ENOSPC.
          for (let i = 0; i < (sizeBytes / size) + 1; i++) {
            try {
              writeSync(fd, chunk);
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
              break;
            }
          }
        }
      } finally {
        closeSync(fd);
      }
    },
    free() {
      unlinkSync(filler);
    },
    cleanup() {
      process.removeListener('exit', cleanup);
      cleanup();
    },
    setReadOnly(isReadOnly) {
      execFileSync('mount', ['-o', `remount,${isReadOnly ? 'ro' : 'rw'}`, dir], { stdio: 'ignore' });
    },
  };
}
