// Removes what a crash left in the spool's tmp/ (half-written large messages): once at start and
// then periodically, on an unref'd timer, in one process per server (the primary, or the single
// process). Only files older than STALE_TMP_AGE_MS go, so a live writer's file (another worker's,
// written and linked within seconds of the end of data) is never touched. docs/spool.md.

import type { Logger } from 'pino';
import { removeStaleTmp } from '../spool/reader.ts';

/** Far above the life of a live tmp file (seconds) and above any data timeout between writes. */
export const STALE_TMP_AGE_MS = 60 * 60_000;
export const TMP_SWEEP_INTERVAL_MS = 10 * 60_000;

export type TmpSweeperOptions = {
  olderThanMs?: number;
  intervalMs?: number;
  now?: () => number;
};

/** Sweeps once (awaited), then every interval; returns a stop function. */
export async function startTmpSweeper(dir: string, log: Logger, opts: TmpSweeperOptions = {}): Promise<() => void> {
  const olderThanMs = opts.olderThanMs ?? STALE_TMP_AGE_MS;
  const now = opts.now ?? Date.now;
  const sweep = async (): Promise<void> => {
    try {
      const removed = await removeStaleTmp(dir, { olderThanMs, nowMs: now() });
      if (removed > 0) log.info({ removed, olderThanMs }, 'removed stale files from the spool\'s tmp/');
    } catch (err) {
      log.warn({ err }, 'cannot clean the spool\'s tmp/');
    }
  };
  await sweep();
  const timer = setInterval(() => void sweep(), opts.intervalMs ?? TMP_SWEEP_INTERVAL_MS);
  timer.unref();
  return () => clearInterval(timer);
}
