// Watches the free space on the spool's file system (statfs, every few seconds, on an unref'd
// timer) and says when it crosses the configured floor (`spool.min_free_bytes`), so that MAIL is
// answered 452 4.3.1 while the spool is low instead of a client uploading a whole body for a 451
// (Postfix's queue_minfree idea). Owns only the measurement and the low/ok state; never refuses
// anything itself (the session machine does, fed `spool-space` by the server).

import { statfs } from 'node:fs/promises';

/** Bytes an unprivileged writer can still use on the file system holding `dir`. */
export type FreeSpaceProbe = (dir: string) => Promise<number>;

export const statfsFreeBytes: FreeSpaceProbe = async (dir) => {
  const s = await statfs(dir);
  // bavail, not bfree: the blocks reserved for root are not ours to fill.
  return s.bavail * s.bsize;
};

/** Often enough that a filling disk is seen within seconds; one statfs costs microseconds. */
export const SPOOL_SPACE_INTERVAL_MS = 5_000;

export type SpoolSpaceOptions = {
  dir: string;
  /** The floor; 0 turns the monitor off (never low). */
  minFreeBytes: number;
  intervalMs?: number;
  probe?: FreeSpaceProbe;
  /** Called when the state changes, and once after the first measurement if it is low. */
  onChange: (isLow: boolean, freeBytes: number) => void;
  /** Every measurement (a metric). */
  onMeasure?: (freeBytes: number, isLow: boolean) => void;
  /** A failed measurement; the state is kept as it was. */
  onError?: (err: unknown) => void;
};

export class SpoolSpaceMonitor {
  readonly #opts: SpoolSpaceOptions;
  #isLow = false;
  #timer: NodeJS.Timeout | null = null;
  #isMeasuring = false;
  #hasFailed = false;

  constructor(opts: SpoolSpaceOptions) {
    this.#opts = opts;
  }

  get isLow(): boolean {
    return this.#isLow;
  }

  /** Measures once (so the first session already sees the state), then every interval. */
  async start(): Promise<void> {
    if (this.#opts.minFreeBytes <= 0) return;
    await this.measure();
    this.#timer = setInterval(() => void this.measure(), this.#opts.intervalMs ?? SPOOL_SPACE_INTERVAL_MS);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** One measurement; overlapping calls (a slow file system) are skipped, not queued. */
  async measure(): Promise<void> {
    if (this.#isMeasuring) return;
    this.#isMeasuring = true;
    try {
      const freeBytes = await (this.#opts.probe ?? statfsFreeBytes)(this.#opts.dir);
      this.#hasFailed = false;
      const isLow = freeBytes < this.#opts.minFreeBytes;
      this.#opts.onMeasure?.(freeBytes, isLow);
      if (isLow !== this.#isLow) {
        this.#isLow = isLow;
        this.#opts.onChange(isLow, freeBytes);
      }
    } catch (err) {
      // Reported once per run of failures, not every few seconds.
      if (!this.#hasFailed) this.#opts.onError?.(err);
      this.#hasFailed = true;
    } finally {
      this.#isMeasuring = false;
    }
  }
}
