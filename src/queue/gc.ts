// Owns spool reclamation: how many live messages each segment holds, which segments their
// writers have sealed, and deleting a segment once it is sealed and empty of live messages, or a
// message file once its message is done. Never deletes a segment a writer may still append to
// (unsealed), nor one holding a message whose removal is not yet durable in the state log (the
// manager releases a message only after its `removed` record is fsynced). docs/delivery.md "Queue".

import { unlink } from 'node:fs/promises';
import path from 'node:path';
import { fsyncDir } from '../util/durable-fs.ts';

export class SegmentRefs {
  readonly #live = new Map<string, number>();
  readonly #sealed = new Set<string>();

  /** A live message in `segment` (`segments/<file>`). */
  retain(segment: string): void {
    this.#live.set(segment, (this.#live.get(segment) ?? 0) + 1);
  }

  /** Its message is done and durably removed; true when the segment can go now. */
  release(segment: string): boolean {
    const n = (this.#live.get(segment) ?? 0) - 1;
    if (n > 0) this.#live.set(segment, n);
    else this.#live.delete(segment);
    return n <= 0 && this.#sealed.has(segment);
  }

  /** The writer will never append again; true when the segment can go now. */
  seal(segment: string): boolean {
    this.#sealed.add(segment);
    return !this.#live.has(segment);
  }

  isSealed(segment: string): boolean {
    return this.#sealed.has(segment);
  }

  liveIn(segment: string): number {
    return this.#live.get(segment) ?? 0;
  }

  forget(segment: string): void {
    this.#sealed.delete(segment);
    this.#live.delete(segment);
  }

  get sealedCount(): number {
    return this.#sealed.size;
  }
}

/** Deletes one spool file (`segments/<file>` or `messages/<id>.msg`) and fsyncs its directory,
 *  so that a crash cannot bring it back after the state log forgot it. A file already gone is
 *  not an error. */
export async function removeSpoolFile(spoolDir: string, relative: string): Promise<void> {
  // Security: only names the queue built from locations it trusts; never a path from outside.
  if (!/^(segments\/[0-9]{15}-[A-Za-z0-9_]{1,32}-[0-9]{6,}\.seg|messages\/[A-Za-z0-9_-]{1,64}\.msg)$/.test(relative)) {
    throw new TypeError(`not a spool file: ${relative}`);
  }
  const file = path.join(spoolDir, relative);
  try {
    await unlink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return;
  }
  await fsyncDir(path.dirname(file));
}
