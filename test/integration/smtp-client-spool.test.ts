// From the spool to the next hop: a message Portcullis accepted in bare_line_endings =
// "normalize" mode, with a line of only "." and lines starting with dots, is read back from the
// spool and delivered by SmtpCourier; the next hop receives it dot-stuffed and, unstuffed,
// byte-identical to the spool's content (issue 10, "what goes on the wire").

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultConfig } from '../../src/config/types.ts';
import { SmtpCourier } from '../../src/delivery/smtp.ts';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { testJob } from '../helpers/delivery-job.ts';
import { sinkContent, startSmtpSink } from '../helpers/mail-peers.ts';
import { startTestServer } from '../helpers/server.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';
import { startStubPeer } from '../helpers/stub-smtp-peer.ts';

test('a message accepted with bare LF normalised arrives at the next hop byte-identical to the spool', async (t) => {
  const config = defaultConfig();
  config.domains.local = ['example.test'];
  config.smtp.bareLineEndings = 'normalize';
  const server = await startTestServer(config);
  t.after(server.stop);
  const c = await SmtpClient.connect(server.port);
  t.after(() => c.close());
  await c.expect('', 220, 'greeting');
  await c.expect('EHLO client.example\r\n', 250);
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  await c.expect('RCPT TO:<alice@example.test>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  // As sent: dot-stuffed ("..", "...x"), with a bare LF inside a line pair.
  await c.expect('Subject: dots\r\n\r\n..\r\n...two\r\n..one\r\nbare\nlf\r\nend\r\n.\r\n', 250, 'normalised and stored');
  await c.expect('QUIT\r\n', 221);

  let stored: Buffer | null = null;
  for await (const e of scanSpool(server.spoolDir)) stored = (await readMessage(server.spoolDir, e.envelope.queueId, e.location))!.content;
  assert.ok(stored !== null);
  const text = stored.toString('latin1');
  assert.ok(text.endsWith('Subject: dots\r\n\r\n.\r\n..two\r\n.one\r\nbare\r\nlf\r\nend\r\n'), text);

  const peer = await startStubPeer({});
  const sink = await startSmtpSink();
  t.after(() => Promise.all([peer.stop(), sink.stop()]));
  for (const port of [peer.port, sink.port]) {
    const courier = new SmtpCourier({ hosts: [{ host: '127.0.0.1', port }], heloName: 'out.example.test', tls: 'none', cache: false });
    const res = await courier.deliver(testJob({ content: stored, chunkBytes: 5 }), new AbortController().signal);
    assert.equal(res[0].status, 'delivered');
  }
  const wire = peer.sessions[0].messages[0].toString('latin1');
  const unstuffed = wire.split('\r\n').map((l) => (l.startsWith('.') ? l.slice(1) : l)).join('\r\n');
  assert.equal(unstuffed, text, 'byte-identical after unstuffing');
  assert.ok(wire.includes('\r\n..\r\n...two\r\n..one\r\n'));
  assert.ok(sinkContent(sink.dumps()[0]).startsWith(text.replace(/\r\n/g, '\n')));
});
