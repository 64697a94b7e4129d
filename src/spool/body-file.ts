// The body file of one transaction whose content grew past what a session holds in memory: the
// content after its header section, appended in order as it arrives, in the spool's tmp/ (never
// read by recovery; stale ones are removed by removeStaleTmp). The commit copies it into the
// message's own file; the connection removes it when the transaction is over.
// Never loses the order of appends; after a failed write every later use fails (the commit, then
// the client, gets a 451), and nothing of it is ever acknowledged.

import { createReadStream } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { SpoolError, TMP_DIR } from './format.ts';

/** Body files are mail: owner only, as every spool file. */
const FILE_MODE = 0o600;
/** Security: the name comes from a session id and a transaction number; checked anyway. */
const NAME = /^[A-Za-z0-9_-]{1,80}$/;

export class BodyFile {
  readonly path: string;
  #fh: Promise<FileHandle> | null = null;
  /** Every write, in order: each starts after the one before it. */
  #chain: Promise<void> = Promise.resolve();
  #position = 0;
  #pendingBytes = 0;
  #failure: Error | null = null;
  #isRemoved = false;

  constructor(spoolDir: string, name: string) {
    if (!NAME.test(name)) throw new TypeError('body file name must be a plain token');
    this.path = path.join(spoolDir, TMP_DIR, `${name}.body`);
  }

  /** Octets appended and not yet written: the connection stops reading while this is large. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /** Octets appended so far. */
  get bytes(): number {
    return this.#position;
  }

  /** Queues `chunks` to be written after everything appended before (the buffers are kept by
   *  reference until written: the caller leaves them alone). */
  append(chunks: readonly Buffer[]): void {
    if (this.#isRemoved) throw new Error('append to a removed body file');
    let n = 0;
    for (const c of chunks) n += c.length;
    const at = this.#position;
    this.#position += n;
    this.#pendingBytes += n;
    this.#fh ??= open(this.path, 'wx', FILE_MODE);
    const fh = this.#fh;
    this.#chain = this.#chain.then(async () => {
      try {
        if (this.#failure !== null) return;
        const handle = await fh;
        let written = 0;
        let pending: Buffer[] = [...chunks];
        while (pending.length > 0) {
          const { bytesWritten } = await handle.writev(pending, at + written);
          if (bytesWritten === 0) throw new SpoolError('SPOOL_WRITE_FAILED', 'body file write made no progress');
          written += bytesWritten;
          let skip = bytesWritten;
          while (pending.length > 0 && skip >= pending[0].length) skip -= pending.shift()!.length;
          if (skip > 0) pending[0] = pending[0].subarray(skip);
        }
      } catch (err) {
        this.#failure ??= err instanceof Error ? err : new Error(String(err));
      } finally {
        this.#pendingBytes -= n;
      }
    });
  }

  /** Resolves once every append is written (not fsynced: the commit's copy is); rejects after a failed write. */
  async flushed(): Promise<void> {
    await this.#chain;
    if (this.#failure !== null) throw new SpoolError('SPOOL_WRITE_FAILED', 'body file write failed', { cause: this.#failure });
  }

  /** `bytes` octets from `offset`, as a stream, once everything appended is written. */
  async *read(offset: number, bytes: number): AsyncIterable<Buffer> {
    await this.flushed();
    if (bytes === 0) return;
    yield* createReadStream(this.path, { start: offset, end: offset + bytes - 1, highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>;
  }

  /**
   * `bytes` octets from `offset`, read into `buffer` over and over: each view yielded is valid
   * only until the next one is asked for. The commit's copy uses it so that copying a large body
   * allocates nothing per read (a stream allocates a new buffer for every read, and under many
   * concurrent large commits those dead buffers piled up until a full collection). Stops early
   * if the file is shorter than asked; the caller counts what it got.
   */
  async *readInto(buffer: Buffer, offset: number, bytes: number): AsyncIterable<Buffer> {
    await this.flushed();
    if (bytes === 0) return;
    const fh = await open(this.path, 'r');
    try {
      const end = offset + bytes;
      for (let at = offset; at < end; ) {
        const { bytesRead } = await fh.read(buffer, 0, Math.min(buffer.length, end - at), at);
        if (bytesRead === 0) return;
        yield buffer.subarray(0, bytesRead);
        at += bytesRead;
      }
    } finally {
      await fh.close();
    }
  }

  /** Closes and removes the file (after the writes already queued); never throws. */
  async remove(): Promise<void> {
    if (this.#isRemoved) return;
    this.#isRemoved = true;
    await this.#chain;
    if (this.#fh === null) return;
    // Only a file this object created is removed (its open was O_EXCL).
    const isOpened = await this.#fh.then(
      async (fh) => {
        await fh.close().catch(() => undefined);
        return true;
      },
      () => false,
    );
    if (isOpened) await unlink(this.path).catch(() => undefined);
  }
}
