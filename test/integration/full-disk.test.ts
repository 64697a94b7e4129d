// `portcullis serve` on a spool whose file system is full, for real (a small tmpfs filled to the
// brim): it starts (the state store, unused by the default checks, is not opened), answers MAIL
// 452 4.3.1 instead of taking a body it cannot store, stops cleanly, and accepts mail again once
// space returns. Needs root to mount the tmpfs; skipped otherwise.

import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCliServer } from '../helpers/cli-server.ts';
import { mountSmallDisk } from '../helpers/full-disk.ts';
import { smtpConnect } from '../helpers/smtp-client.ts';

const DISK_BYTES = 4 * 1024 * 1024;
/** The monitor measures every 5 s: space that returns is seen within this. */
const SPACE_SEEN_WITHIN_MS = 12_000;

test('full spool disk: the server starts with workers, refuses MAIL with 452 4.3.1, recovers when space returns', async (t) => {
  const disk = mountSmallDisk(DISK_BYTES);
  if (disk === null) {
    t.skip('needs root to mount a tmpfs');
    return;
  }
  t.after(() => disk.cleanup());
  const spoolDir = path.join(disk.dir, 'spool');
  disk.fill();
  const server = await startCliServer({ workers: 2, spoolDir, spoolToml: ['min_free_bytes = 65536'] });
  t.after(() => server.cleanup());
  // The state store is opened lazily at its first use (store/lazy.ts); since the tarpit looks up
  // each new client's network (defense/tarpit-memory.ts), that is the first connection, here the
  // helper's readiness probe. On a full disk that open may fail: a StoreError the lookup answers
  // with "not remembered", never a dead worker.
  assert.doesNotMatch(server.logText(), /worker died/, 'no worker died on the full disk');
  assert.match(server.logText(), /spool low on space/);

  const c = await smtpConnect(server.port);
  t.after(() => c.close());
  assert.match(await c.send('EHLO client.example'), /^250/);
  assert.equal(await c.send('MAIL FROM:<a@client.example>'), '452 4.3.1 Insufficient system storage, try again later');

  disk.free();
  const deadline = Date.now() + SPACE_SEEN_WITHIN_MS;
  let reply = '';
  while (Date.now() < deadline) {
    // A new session each time: whichever worker takes it must have seen the space return.
    const d = await smtpConnect(server.port);
    await d.send('EHLO client.example');
    reply = await d.send('MAIL FROM:<a@client.example>');
    if (reply.startsWith('250')) {
      assert.match(await d.send('RCPT TO:<postmaster@example.test>'), /^250/);
      assert.match(await d.send('DATA'), /^354/);
      assert.match(await d.send('Subject: x\r\n\r\nstored after the disk had room again\r\n.'), /^250 /);
      await d.send('QUIT');
      d.close();
      break;
    }
    await d.send('QUIT');
    d.close();
    await sleep(250);
  }
  assert.match(reply, /^250/);
  assert.match(server.logText(), /spool space back above its floor/);
  assert.match(server.logText(), /queue state cannot be opened; MAIL is answered 452 4.3.1/);
  assert.match(server.logText(), /"msg":"queue state opened"/, 'the queue opened once the disk had room');
  const exit = await server.stop();
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.doesNotMatch(server.logText(), /"level":(50|60)/, 'no error or fatal line');
});

test('full spool disk with greylisting: the server starts; greylisting tempfails, the rest is served', async (t) => {
  const disk = mountSmallDisk(DISK_BYTES);
  if (disk === null) {
    t.skip('needs root to mount a tmpfs');
    return;
  }
  t.after(() => disk.cleanup());
  const spoolDir = path.join(disk.dir, 'spool');
  disk.fill();
  // The floor off, so MAIL is taken and the recipient reaches the greylist check.
  const server = await startCliServer({ workers: 1, spoolDir, spoolToml: ['min_free_bytes = 0'], extraToml: '[greylist]\nenabled = true\n' });
  t.after(() => server.cleanup());
  const c = await smtpConnect(server.port);
  t.after(() => c.close());
  assert.match(await c.send('EHLO client.example'), /^250/);
  assert.match(await c.send('MAIL FROM:<a@client.example>'), /^250/);
  assert.equal(await c.send('RCPT TO:<postmaster@example.test>'), '451 4.3.0 Temporary local problem, try again later');
  assert.match(await c.send('RSET'), /^250/);
  assert.match(await c.send('NOOP'), /^250/);
  await c.send('QUIT');
  assert.match(server.logText(), /"msg":"state store cannot be opened; checks that need it answer tempfail"/);
  assert.deepEqual(await server.stop(), { code: 0, signal: null });
});
