// The Maildir courier, for `maildir:PATH` routes: one Maildir per recipient under PATH, each
// message written to tmp/ under a unique name, fsynced, linked into new/ and the directory
// fsynced before the recipient counts as delivered. `Return-Path:` and `Delivered-To:` go on
// top (RFC 5321 4.4: the final delivery adds Return-Path). Never overwrites a message (link, not
// rename), never retries, never throws for a delivery failure: one result per recipient.
// Maildir: the qmail maildir(5) convention (tmp/new/cur; "time.M<usec>P<pid>Q<n>.host").
//
// Layout (decided here): PATH/<address>/ with the address lowercased ("alice@example.test"),
// so that several local domains can share one PATH without their users colliding, and the
// directory name says whose it is. Messages are stored with LF line endings, as the Maildir
// convention and the mail readers that read it expect (`lineEndings: "crlf"` keeps CRLF).
// Dovecot reads it as is with `mail_location = maildir:PATH/%u` (maildir-dovecot.test.ts).
// Hand-written: a Maildir writer is a page of node:fs on util/durable-fs.ts, and what matters
// (the order of write, fsync, link and directory fsync before "delivered") is easiest to review
// here, next to the spool's own, than inside a dependency.

import { link, mkdir, open, unlink } from 'node:fs/promises';
import path from 'node:path';
import { DELIVERY_REPLY } from '../protocol/replies.ts';
import { ensureDurableDir, fsyncDir, writeAll } from '../util/durable-fs.ts';
import type { Courier, DeliveryJob, DeliveryReply, RecipientResult } from './types.ts';

/** Maildirs hold mail: owner only. */
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
/** One path component (NAME_MAX on Linux and most file systems). */
const MAX_NAME_BYTES = 255;
/** New unique names tried when one is taken (a clock step back, a pid reused). */
const MAX_NAME_TRIES = 10;

export type MaildirOptions = {
  /** The Maildir root: PATH of `maildir:PATH`, absolute. */
  root: string;
  /** This host's name for unique file names (os.hostname()). */
  hostname: string;
  pid?: number;
  /** Wall clock in microseconds since the epoch; injected for tests. */
  nowMicros?: () => bigint;
  lineEndings?: 'lf' | 'crlf';
};

/** The results the courier gives, from the one catalogue (protocol/replies.ts). */
export const MAILDIR_REPLIES = {
  delivered: DELIVERY_REPLY.maildirDelivered,
  badMailbox: DELIVERY_REPLY.badMailbox,
  diskFull: DELIVERY_REPLY.diskFull,
  quota: DELIVERY_REPLY.mailboxFull,
  notWritable: DELIVERY_REPLY.maildirNotWritable,
  localError: DELIVERY_REPLY.localError,
  interrupted: DELIVERY_REPLY.interrupted,
};

/** The recipient's directory name under the root, or null when the address cannot be one safely. */
export function mailboxName(address: string): string | null {
  const name = address.toLowerCase();
  const at = name.lastIndexOf('@');
  if (at <= 0 || at === name.length - 1) return null;
  // Security: the name is one path component: no separator, no "." or ".." (or any leading dot:
  // hidden, and Maildir++ folders), no NUL or control characters.
  if (name.includes('/') || name.startsWith('.') || /[\x00-\x1f\x7f]/.test(name)) return null;
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) return null;
  return name;
}

/** maildir(5): the host part of a unique name may not hold "/" or ":" (the info separator). */
function safeHost(hostname: string): string {
  return hostname.replace(/\//g, '\\057').replace(/:/g, '\\072');
}

function errnoCode(err: unknown): string {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'string' ? (err as { code: string }).code : '';
}

function failureReply(err: unknown): { status: 'deferred' | 'failed'; reply: DeliveryReply } {
  switch (errnoCode(err)) {
    case 'ENOSPC':
      return { status: 'deferred', reply: MAILDIR_REPLIES.diskFull };
    case 'EDQUOT':
      return { status: 'deferred', reply: MAILDIR_REPLIES.quota };
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      // The operator's to fix (permissions, a read-only mount): the mail waits meanwhile.
      return { status: 'deferred', reply: MAILDIR_REPLIES.notWritable };
    case 'ENAMETOOLONG':
      return { status: 'failed', reply: MAILDIR_REPLIES.badMailbox };
    default:
      return { status: 'deferred', reply: MAILDIR_REPLIES.localError };
  }
}

/** CRLF -> LF over chunks; a CR at a chunk's end waits for the next chunk. */
async function* toLf(chunks: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
  let pendingCr = false;
  for await (const chunk of chunks) {
    if (chunk.length === 0) continue;
    const parts: Buffer[] = [];
    let from = 0;
    if (pendingCr) {
      if (chunk[0] !== 0x0a) parts.push(Buffer.from([0x0d]));
      pendingCr = false;
    }
    for (let i = chunk.indexOf(0x0d); i >= 0; i = chunk.indexOf(0x0d, i + 1)) {
      if (i === chunk.length - 1) {
        parts.push(chunk.subarray(from, i));
        from = chunk.length;
        pendingCr = true;
        break;
      }
      if (chunk[i + 1] === 0x0a) {
        parts.push(chunk.subarray(from, i));
        from = i + 1;
      }
    }
    if (from < chunk.length) parts.push(chunk.subarray(from));
    yield Buffer.concat(parts);
  }
  if (pendingCr) yield Buffer.from([0x0d]);
}

export class MaildirCourier implements Courier {
  readonly #root: string;
  readonly #host: string;
  readonly #pid: number;
  readonly #now: () => bigint;
  readonly #isLf: boolean;
  #counter = 0;

  constructor(opts: MaildirOptions) {
    this.#root = path.resolve(opts.root);
    this.#host = safeHost(opts.hostname);
    this.#pid = opts.pid ?? process.pid;
    // Date.now() has millisecond steps; the monotonic clock from one wall-clock reading gives microseconds.
    const base = BigInt(Date.now()) * 1000n - process.hrtime.bigint() / 1000n;
    this.#now = opts.nowMicros ?? (() => base + process.hrtime.bigint() / 1000n);
    this.#isLf = (opts.lineEndings ?? 'lf') === 'lf';
  }

  /** maildir(5): seconds, then M<microseconds>P<pid>Q<delivery counter>, then the host. */
  uniqueName(): string {
    const micros = this.#now();
    const seconds = micros / 1_000_000n;
    const usec = micros % 1_000_000n;
    this.#counter++;
    return `${seconds}.M${usec}P${this.#pid}Q${this.#counter}.${this.#host}`;
  }

  async deliver(job: DeliveryJob, signal: AbortSignal): Promise<RecipientResult[]> {
    const results: RecipientResult[] = [];
    for (const recipient of job.recipients) {
      if (signal.aborted) {
        results.push({ status: 'deferred', reply: MAILDIR_REPLIES.interrupted, remoteMta: null });
        continue;
      }
      const name = mailboxName(recipient.address);
      if (name === null) {
        results.push({ status: 'failed', reply: MAILDIR_REPLIES.badMailbox, remoteMta: null });
        continue;
      }
      try {
        await this.#deliverOne(job, path.join(this.#root, name), recipient.address);
        results.push({ status: 'delivered', reply: MAILDIR_REPLIES.delivered, remoteMta: null });
      } catch (err) {
        results.push({ ...failureReply(err), remoteMta: null });
      }
    }
    return results;
  }

  async #deliverOne(job: DeliveryJob, maildir: string, address: string): Promise<void> {
    await ensureDurableDir(this.#root, DIR_MODE);
    let isNew = false;
    try {
      await mkdir(maildir, { mode: DIR_MODE });
      isNew = true;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    for (const sub of ['tmp', 'new', 'cur']) {
      try {
        await mkdir(path.join(maildir, sub), { mode: DIR_MODE });
        isNew = true;
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw err;
      }
    }
    // Durability: a new Maildir's names must survive a crash before a message in it counts.
    if (isNew) {
      await fsyncDir(maildir);
      await fsyncDir(this.#root);
    }

    const eol = this.#isLf ? '\n' : '\r\n';
    // RFC 5321 4.4: Return-Path records the reverse-path at final delivery ('' -> "<>").
    const top = Buffer.from(`Return-Path: <${job.reversePath}>${eol}Delivered-To: ${address}${eol}`, 'utf8');
    for (let attempt = 0; ; attempt++) {
      const unique = this.uniqueName();
      const tmpFile = path.join(maildir, 'tmp', unique);
      const fh = await open(tmpFile, 'wx', FILE_MODE);
      let size = 0;
      try {
        try {
          await writeAll(fh, [top], 0);
          size += top.length;
          for await (const chunk of this.#isLf ? toLf(job.content()) : job.content()) {
            await writeAll(fh, [chunk], size);
            size += chunk.length;
          }
          await fh.sync();
        } finally {
          await fh.close();
        }
        // Maildir++ ",S=<size>": readers (Dovecot quota) take the size from the name.
        const final = path.join(maildir, 'new', `${unique},S=${size}`);
        try {
          // link, not rename: a name already in new/ (another message) is never replaced.
          await link(tmpFile, final);
        } catch (err) {
          if (errnoCode(err) === 'EEXIST' && attempt < MAX_NAME_TRIES) continue;
          throw err;
        }
        // Durability: the name in new/ is what the reader finds; delivered only once it is on disk.
        await fsyncDir(path.join(maildir, 'new'));
        return;
      } finally {
        await unlink(tmpFile).catch(() => undefined);
      }
    }
  }

  async close(): Promise<void> {}
}
