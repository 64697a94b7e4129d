// A real Maildir reader reads what the Maildir courier writes: Dovecot (started by the test,
// auth only, no listeners) and `doveadm fetch` see each message in INBOX with our Return-Path and
// Delivered-To, a physical size equal to the file's `S=` (Dovecot checks it and refuses the
// message if they differ), and the body unchanged. Stops only the dovecot it started, by PID.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ownProcess } from '../../test/helpers/owned-process.ts';
import { MaildirCourier } from './maildir.ts';
import type { DeliveryJob } from './types.ts';

const run = promisify(execFile);
const DOVECOT = existsSync('/usr/sbin/dovecot') ? '/usr/sbin/dovecot' : 'dovecot';
/** Dovecot refuses uid 0 for mail: as root, the tree is handed to nobody before it reads it. */
const MAIL_UID = process.getuid?.() === 0 ? 65534 : (process.getuid?.() ?? 65534);
const MAIL_GID = process.getuid?.() === 0 ? 65534 : (process.getgid?.() ?? 65534);

function chownTree(dir: string): void {
  chownSync(dir, MAIL_UID, MAIL_GID);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) chownTree(p);
    else chownSync(p, MAIL_UID, MAIL_GID);
  }
}

test('Dovecot reads the Maildir the courier wrote: headers, size (S=), body', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-dovecot-'));
  chmodSync(dir, 0o755);
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const mail = path.join(dir, 'mail');
  const content = 'Subject: hello\r\nMessage-ID: <1@c.example>\r\n\r\nfirst line\r\n.leading dot\r\n\r\nlast\r\n';
  const job: DeliveryJob = {
    queueId: 'Q', reversePath: 'sender@c.example', recipients: [{ index: 0, address: 'alice@example.test' }, { index: 1, address: 'bob@example.test' }],
    bodyType: '7BIT', smtputf8: false, size: content.length,
    async *content() {
      yield Buffer.from(content.slice(0, 20));
      yield Buffer.from(content.slice(20));
    },
  };
  const results = await new MaildirCourier({ root: mail, hostname: 'mx.example.test' }).deliver(job, new AbortController().signal);
  assert.deepEqual(results.map((r) => r.status), ['delivered', 'delivered']);
  if (process.getuid?.() === 0) chownTree(mail);

  const conf = path.join(dir, 'dovecot.conf');
  // %u is the full address: the courier's PATH/<address>/ layout is a plain mail_location.
  writeFileSync(conf, [
    'protocols =', `base_dir = ${dir}/run`, `state_dir = ${dir}/state`, `log_path = ${dir}/dovecot.log`, 'ssl = no',
    'first_valid_uid = 1', `mail_location = maildir:${mail}/%u`,
    `userdb {\n  driver = static\n  args = uid=${MAIL_UID} gid=${MAIL_GID} home=${mail}/%u\n}`,
    'passdb {\n  driver = static\n  args = nopassword=y\n}', '',
  ].join('\n'));
  const child = spawn(DOVECOT, ['-F', '-c', conf], { stdio: 'ignore' });
  const owned = ownProcess(child);
  t.after(() => owned.stop());
  const socket = path.join(dir, 'run', 'auth-userdb');
  for (let i = 0; i < 100 && !existsSync(socket) && !owned.isExited(); i++) await sleep(50);
  assert.ok(existsSync(socket), `dovecot did not start: ${owned.spawnError() ?? ''}`);

  for (const user of ['alice@example.test', 'bob@example.test']) {
    const { stdout, stderr } = await run('doveadm', ['-c', conf, 'fetch', '-u', user, 'hdr.return-path hdr.delivered-to size.physical body', 'mailbox', 'INBOX', 'all'], { timeout: 10_000 });
    assert.equal(stderr, '', 'Dovecot found nothing wrong (a wrong S= size is an error here)');
    // Dovecot moves a message it has seen from new/ to cur/ (adding ":2," flags); either way one file.
    const names = [...readdirSync(path.join(mail, user, 'new')), ...readdirSync(path.join(mail, user, 'cur'))];
    assert.equal(names.length, 1);
    const name = names[0];
    const size = Number(/,S=(\d+)/.exec(name)![1]);
    assert.equal(
      stdout,
      `hdr.return-path: <sender@c.example>\nhdr.delivered-to: ${user}\nsize.physical: ${size}\nbody:\nfirst line\n.leading dot\n\nlast\n`,
    );
  }
});
