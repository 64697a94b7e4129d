// What the real-milter tests share: a Portcullis server with one [[milter]], test messages, and
// the one-session run they all make (clean, RSET, GTUBE, clean), reading back what was stored.

import assert from 'node:assert/strict';
import { pino } from 'pino';
import { defaultConfig } from '../../src/config/types.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { GTUBE } from './scanners.ts';
import { startTestServer } from './server.ts';
import { SmtpClient } from './smtp-client.ts';

export { GTUBE };

export function mail(subject: string, body: string, n: number): string {
  return [
    'From: Alice <a@example.test>',
    'To: Bob <bob@example.test>',
    `Subject: ${subject}`,
    'Date: Wed, 02 Dec 2026 06:00:00 +0000',
    `Message-ID: <m${n}.${Date.now()}@example.test>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    body,
    '',
  ].join('\r\n');
}

export const CLEAN_BODY = 'Hello Bob,\r\n\r\nthe minutes of the meeting are attached to the wiki page.\r\n\r\nRegards,\r\nAlice';

/** A server whose one [[milter]] is at `where`: a loopback port or a UNIX socket path. */
export async function serverWithMilter(t: { after: (fn: () => Promise<void>) => void }, where: number | string) {
  const config = defaultConfig();
  config.domains.local = ['example.test'];
  config.smtp.hostname = 'mx.example.test';
  config.milter = [{ address: typeof where === 'string' ? { kind: 'unix', path: where } : { kind: 'tcp', host: '127.0.0.1', port: where }, onFailure: 'tempfail', connectTimeoutSeconds: 5, commandTimeoutSeconds: 30 }];
  const pipeline = buildPipeline(config, pino({ level: process.env.PORTCULLIS_TEST_LOG ?? 'silent' }));
  assert.ok(pipeline !== null);
  const server = await startTestServer(config, { policy: pipeline });
  t.after(server.stop);
  return server;
}

export async function storedById(spoolDir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const e of scanSpool(spoolDir)) {
    const m = await readMessage(spoolDir, e.envelope.queueId, e.location);
    assert.ok(m !== null);
    out.set(e.envelope.queueId, m.content.toString('latin1'));
  }
  return out;
}

/** One session: clean, an envelope abandoned by RSET, GTUBE (answered `gtubeCode`), clean. The queue ids of the accepted ones, and GTUBE's reply. */
export async function cleanGtubeClean(port: number, gtubeCode: number): Promise<{ ids: string[]; gtube: string }> {
  const c = await SmtpClient.connect(port);
  try {
    await c.expect('', 220, 'greeting');
    await c.expect('EHLO client.example.test\r\n', 250);
    const ids: string[] = [];
    let gtube = '';
    const send = async (message: string, code: number): Promise<string> => {
      await c.expect('MAIL FROM:<a@example.test>\r\n', 250);
      await c.expect('RCPT TO:<bob@example.test>\r\n', 250);
      await c.expect('DATA\r\n', 354);
      return (await c.expect(`${message}.\r\n`, code)).text;
    };
    const queued = (text: string): string => /queued as (\S+)/.exec(text)?.[1] ?? assert.fail(text);
    ids.push(queued(await send(mail('Minutes', CLEAN_BODY, 1), 250)));
    // A transaction abandoned by RSET: the filter gets SMFIC_ABORT before the next MAIL.
    await c.expect('MAIL FROM:<a@example.test>\r\n', 250);
    await c.expect('RCPT TO:<bob@example.test>\r\n', 250);
    await c.expect('RSET\r\n', 250);
    gtube = await send(mail('Test', `This is the GTUBE:\r\n${GTUBE}`, 2), gtubeCode);
    if (gtubeCode === 250) ids.push(queued(gtube));
    ids.push(queued(await send(mail('Minutes again', CLEAN_BODY, 3), 250)));
    await c.expect('QUIT\r\n', 221);
    return { ids, gtube };
  } finally {
    c.close();
  }
}
