// LmtpCourier against real Dovecot LMTP (TCP and UNIX socket) delivering to Maildir, and a
// scripted stub for per-recipient replies after the data that Dovecot will not produce on demand.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { LmtpCourier } from '../../src/delivery/lmtp.ts';
import { testJob } from '../helpers/delivery-job.ts';
import { startDovecotLmtp, type DovecotLmtp } from '../helpers/mail-peers.ts';
import { startStubPeer } from '../helpers/stub-smtp-peer.ts';

const FAST = { greetingMs: 3000, commandMs: 3000, mailMs: 3000, rcptMs: 3000, dataInitMs: 3000, dataBlockMs: 3000, dataEndMs: 3000 };
const signal = (): AbortSignal => new AbortController().signal;

const CONTENT = 'Subject: lmtp test\r\nFrom: sender@example.org\r\n\r\n.\r\n..dots\r\nbare lf\nend\r\n';
const CANONICAL = 'Subject: lmtp test\r\nFrom: sender@example.org\r\n\r\n.\r\n..dots\r\nbare lf\r\nend\r\n';

describe('Dovecot LMTP', () => {
  let dovecot: DovecotLmtp;
  before(async () => {
    dovecot = await startDovecotLmtp(['alice', 'bob']);
  });
  after(async () => {
    await dovecot.stop();
  });

  test('one reply per recipient after the data: two mailboxes delivered, an unknown user failed 5.1.1', async () => {
    const c = new LmtpCourier({ target: { host: '127.0.0.1', port: dovecot.port }, heloName: 'mx.example.test', timeouts: FAST });
    const res = await c.deliver(testJob({ content: CONTENT, recipients: ['alice@example.test', 'nobody-here@example.test', 'bob@example.test'] }), signal());
    await c.close();
    assert.deepEqual(res.map((r) => [r.status, r.reply.code, r.reply.enhanced]), [['delivered', 250, '2.0.0'], ['failed', 550, '5.1.1'], ['delivered', 250, '2.0.0']]);
    for (const user of ['alice', 'bob']) {
      const files = dovecot.delivered(user);
      assert.equal(files.length, 1);
      // Dovecot prepends Return-Path and Delivered-To; the rest is our content, unstuffed, CRLF or LF.
      const body = files[0].replace(/\r\n/g, '\n');
      assert.ok(body.endsWith(CANONICAL.replace(/\r\n/g, '\n')), body);
      assert.match(body, new RegExp(`^Return-Path: <sender@example.org>\\n`));
    }
  });

  test('over the UNIX socket, with the session reused (RSET first) for the next job', async () => {
    const c = new LmtpCourier({ target: { socket: dovecot.socket }, heloName: 'mx.example.test', timeouts: FAST });
    const before = dovecot.delivered('alice').length;
    for (let i = 0; i < 3; i++) {
      const res = await c.deliver(testJob({ recipients: ['alice@example.test'] }), signal());
      assert.equal(res[0].status, 'delivered', JSON.stringify(res[0].reply));
    }
    await c.close();
    assert.equal(dovecot.delivered('alice').length, before + 3);
  });

  test('NOTIFY=SUCCESS to an LMTP server is a delivery, not "relayed" (it is the final delivery agent)', async () => {
    const c = new LmtpCourier({ target: { host: '127.0.0.1', port: dovecot.port }, heloName: 'mx.example.test', timeouts: FAST, cache: false });
    const res = await c.deliver(testJob({ recipients: [{ address: 'bob@example.test', notify: ['SUCCESS'] }] }), signal());
    assert.equal(res[0].status, 'delivered');
  });
});

describe('LMTP stub peers', () => {
  test('each recipient\'s reply after the data is honoured on its own: delivered, deferred (4xx), failed (5xx)', async () => {
    const peer = await startStubPeer({ isLmtp: true, afterData: () => '250 2.0.0 a saved\r\n452 4.2.2 b over quota\r\n552 5.2.2 c mailbox full\r\n' });
    try {
      const c = new LmtpCourier({ target: { host: '127.0.0.1', port: peer.port }, heloName: 'mx.example.test', timeouts: FAST, cache: false });
      const res = await c.deliver(testJob({ recipients: ['a@example.test', 'b@example.test', 'c@example.test'] }), signal());
      assert.deepEqual(res.map((r) => [r.status, r.reply.enhanced]), [['delivered', '2.0.0'], ['deferred', '4.2.2'], ['failed', '5.2.2']]);
      assert.equal(peer.sessions[0].commands[0], 'LHLO mx.example.test');
    } finally {
      await peer.stop();
    }
  });

  test('a connection lost after the first recipient\'s reply defers only the others', async () => {
    const peer = await startStubPeer({ isLmtp: true, afterData: () => '250 2.0.0 a saved' });
    try {
      const c = new LmtpCourier({ target: { host: '127.0.0.1', port: peer.port }, heloName: 'mx.example.test', timeouts: { ...FAST, dataEndMs: 300 }, cache: false });
      const res = await c.deliver(testJob({ recipients: ['a@example.test', 'b@example.test'] }), signal());
      assert.deepEqual(res.map((r) => r.status), ['delivered', 'deferred']);
    } finally {
      await peer.stop();
    }
  });
});
