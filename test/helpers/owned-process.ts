// The life of a server process a test helper spawned: knows when it has exited, kills it if the
// test process exits first, and stops it by its own PID (SIGTERM, then SIGKILL after a bound).
// Never signals anything it did not spawn.

import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';

const STOP_TIMEOUT_MS = 3000;

export type OwnedProcess = {
  isExited(): boolean;
  /** The spawn error, if the program could not be started. */
  spawnError(): Error | null;
  /** Resolves once the process has exited (or failed to spawn). */
  readonly exited: Promise<void>;
  stop(): Promise<void>;
};

export function ownProcess(child: ChildProcess): OwnedProcess {
  let isExited = false;
  let spawnError: Error | null = null;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      isExited = true;
      resolve();
    });
    child.once('error', (err) => {
      spawnError = err;
      isExited = true;
      resolve();
    });
  });
  const killOnExit = (): void => {
    if (!isExited) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  return {
    isExited: () => isExited,
    spawnError: () => spawnError,
    exited,
    async stop() {
      process.removeListener('exit', killOnExit);
      if (isExited) return;
      child.kill('SIGTERM');
      const timedOut = await Promise.race([exited.then(() => false), sleep(STOP_TIMEOUT_MS, undefined, { ref: false }).then(() => true)]);
      if (timedOut) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}
