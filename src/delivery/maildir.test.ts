// The Maildir courier with real files: per-recipient Maildirs created 0700 with tmp/new/cur, the
// message in new/ under a unique maildir(5) name with Return-Path and Delivered-To on top and LF
// line endings, nothing left in tmp/; an address that cannot name a directory fails; a read-only
// file system and a full one defer (the latter on a real, filled tmpfs; both need root to mount).

import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { mountSmallDisk } from '../../test/helpers/full-disk.ts';
import { MaildirCourier, mailboxName } from './maildir.ts';
import type { DeliveryJob, DeliveryRecipient } from './types.ts';

const CONTENT = 'Received: from c.example by mx.example.test; Tue, 1 Dec 2026 00:00:00 +0000\r\nSubject: hi\r\n\r\nline one\r\n.dot line\r\n\r\nend\r\n';

function job(recipients: DeliveryRecipient[], content: string | Buffer[] = CONTENT, reversePath = 'sender@client.example'): DeliveryJob {
  const chunks = typeof content === 'string' ? [Buffer.from(content)] : content;
  return {
    queueId: 'Q1', reversePath, recipients, bodyType: '7BIT', smtputf8: false,
    size: chunks.reduce((n, c) => n + c.length, 0),
    async *content() {
      yield* chunks;
    },
  };
}

const never = new AbortController().signal;

async function tempRoot(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'portcullis-maildir-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return path.join(dir, 'maildir');
}

test('delivers to PATH/<address>/new with Return-Path and Delivered-To, LF line endings, 0700 dirs, tmp/ empty', async (t) => {
  const root = await tempRoot(t);
  let micros = 1_764_547_200_123_456n;
  const courier = new MaildirCourier({ root, hostname: 'mx:example/test', pid: 4242, nowMicros: () => micros++ });
  const results = await courier.deliver(job([{ index: 0, address: 'Alice@Example.Test' }, { index: 1, address: 'bob@example.test' }]), never);
  assert.deepEqual(results.map((r) => [r.status, r.reply.code, r.remoteMta]), [['delivered', 250, null], ['delivered', 250, null]]);
  const alice = path.join(root, 'alice@example.test');
  for (const sub of ['', 'tmp', 'new', 'cur']) assert.equal((await stat(path.join(alice, sub))).mode & 0o777, 0o700, `${sub} is 0700`);
  assert.deepEqual(await readdir(path.join(alice, 'tmp')), []);
  const [name] = await readdir(path.join(alice, 'new'));
  const expectedText = 'Return-Path: <sender@client.example>\nDelivered-To: Alice@Example.Test\n' + CONTENT.replace(/\r\n/g, '\n');
  assert.equal(name, `1764547200.M123456P4242Q1.mx\\072example\\057test,S=${Buffer.byteLength(expectedText)}`);
  assert.equal(await readFile(path.join(alice, 'new', name), 'utf8'), expectedText);
  assert.equal((await stat(path.join(alice, 'new', name))).mode & 0o777, 0o600);
  const [bobName] = await readdir(path.join(root, 'bob@example.test', 'new'));
  assert.match(bobName, /^1764547200\.M123457P4242Q2\./, 'unique per delivery');
  assert.match(await readFile(path.join(root, 'bob@example.test', 'new', bobName), 'utf8'), /^Return-Path: <sender@client\.example>\nDelivered-To: bob@example\.test\n/);
});

test('the null reverse-path is Return-Path: <>; crlf keeps the stored bytes; a second message never replaces the first', async (t) => {
  const root = await tempRoot(t);
  const courier = new MaildirCourier({ root, hostname: 'h', pid: 1, nowMicros: () => 5_000_000n, lineEndings: 'crlf' });
  await courier.deliver(job([{ index: 0, address: 'a@x.test' }], CONTENT, ''), never);
  // Same clock: the counter still makes the names differ.
  await courier.deliver(job([{ index: 0, address: 'a@x.test' }], 'Subject: 2\r\n\r\n', ''), never);
  const names = (await readdir(path.join(root, 'a@x.test', 'new'))).sort();
  assert.equal(names.length, 2);
  assert.equal(await readFile(path.join(root, 'a@x.test', 'new', names[0]), 'utf8'), `Return-Path: <>\r\nDelivered-To: a@x.test\r\n${CONTENT}`);
});

test('property: CRLF to LF is the same for any chunking', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.constantFrom('a', '\r', '\n', '\r\n', 'xyz'), { maxLength: 40 }), fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 8 }), async (parts, sizes) => {
      const whole = Buffer.from(parts.join(''));
      const chunks: Buffer[] = [];
      for (let i = 0, k = 0; i < whole.length; k++) {
        chunks.push(whole.subarray(i, i + sizes[k % sizes.length]));
        i += sizes[k % sizes.length];
      }
      const dir = await mkdtemp(path.join(tmpdir(), 'portcullis-lf-'));
      try {
        const courier = new MaildirCourier({ root: dir, hostname: 'h' });
        await courier.deliver(job([{ index: 0, address: 'a@x.test' }], chunks, ''), never);
        const [name] = await readdir(path.join(dir, 'a@x.test', 'new'));
        const body = (await readFile(path.join(dir, 'a@x.test', 'new', name), 'latin1')).replace(/^Return-Path: <>\nDelivered-To: a@x\.test\n/, '');
        assert.equal(body, whole.toString('latin1').replace(/\r\n/g, '\n'));
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }),
    { seed: 77, numRuns: 60 },
  );
});

test('addresses that cannot name a Maildir fail (5.1.3); the others are still delivered', async (t) => {
  const root = await tempRoot(t);
  for (const bad of ['../x@y.test', 'a/b@y.test', '.hidden@y.test', 'nodomain', 'a\u0000@y.test', `${'l'.repeat(250)}@y.test`]) assert.equal(mailboxName(bad), null, bad);
  const courier = new MaildirCourier({ root, hostname: 'h' });
  const r = await courier.deliver(job([{ index: 0, address: '../../etc@y.test' }, { index: 1, address: 'ok@y.test' }]), never);
  assert.deepEqual(r.map((x) => [x.status, x.reply.enhanced]), [['failed', '5.1.3'], ['delivered', '2.0.0']]);
  assert.deepEqual(await readdir(root), ['ok@y.test']);
});

test('a file where the Maildir should be defers (local error), without touching it', async (t) => {
  const root = await tempRoot(t);
  const courier = new MaildirCourier({ root, hostname: 'h' });
  await courier.deliver(job([{ index: 0, address: 'first@y.test' }]), never);
  await writeFile(path.join(root, 'file@y.test'), 'not a dir');
  const [r] = await courier.deliver(job([{ index: 0, address: 'file@y.test' }]), never);
  assert.deepEqual([r.status, r.reply.code, r.reply.enhanced], ['deferred', 451, '4.3.0']);
  assert.equal(await readFile(path.join(root, 'file@y.test'), 'utf8'), 'not a dir');
});

test('an aborted attempt defers the recipients not yet delivered', async (t) => {
  const root = await tempRoot(t);
  const ac = new AbortController();
  ac.abort();
  const r = await new MaildirCourier({ root, hostname: 'h' }).deliver(job([{ index: 0, address: 'a@y.test' }]), ac.signal);
  assert.deepEqual([r[0].status, r[0].reply.enhanced], ['deferred', '4.3.2']);
});

test('a read-only file system defers (451 4.3.0), and delivers once it is writable', async (t) => {
  const disk = mountSmallDisk(1024 * 1024);
  if (disk === null) {
    t.skip('needs root to mount a tmpfs');
    return;
  }
  t.after(() => disk.cleanup());
  const root = path.join(disk.dir, 'maildir');
  const courier = new MaildirCourier({ root, hostname: 'h' });
  await courier.deliver(job([{ index: 0, address: 'a@y.test' }]), never);
  disk.setReadOnly(true);
  const [r] = await courier.deliver(job([{ index: 0, address: 'a@y.test' }, { index: 1, address: 'new@y.test' }]), never);
  assert.deepEqual([r.status, r.reply.code, r.reply.enhanced], ['deferred', 451, '4.3.0']);
  disk.setReadOnly(false);
  const again = await courier.deliver(job([{ index: 0, address: 'a@y.test' }]), never);
  assert.equal(again[0].status, 'delivered');
  assert.equal((await readdir(path.join(root, 'a@y.test', 'new'))).length, 2);
});

test('a full disk defers (452 4.3.1) and leaves nothing in tmp/ or new/; delivers once space returns', async (t) => {
  const disk = mountSmallDisk(1024 * 1024);
  if (disk === null) {
    t.skip('needs root to mount a tmpfs');
    return;
  }
  t.after(() => disk.cleanup());
  const root = path.join(disk.dir, 'maildir');
  const courier = new MaildirCourier({ root, hostname: 'h' });
  await courier.deliver(job([{ index: 0, address: 'a@y.test' }]), never); // the Maildir exists
  disk.fill();
  const big = [Buffer.from('Subject: big\r\n\r\n'), Buffer.alloc(256 * 1024, 0x61)];
  const [r] = await courier.deliver(job([{ index: 0, address: 'a@y.test' }], big), never);
  assert.deepEqual([r.status, r.reply.code, r.reply.enhanced], ['deferred', 452, '4.3.1']);
  assert.deepEqual(await readdir(path.join(root, 'a@y.test', 'tmp')), []);
  assert.equal((await readdir(path.join(root, 'a@y.test', 'new'))).length, 1, 'only the first message');
  disk.free();
  const [ok] = await courier.deliver(job([{ index: 0, address: 'a@y.test' }], big), never);
  assert.equal(ok.status, 'delivered');
});
