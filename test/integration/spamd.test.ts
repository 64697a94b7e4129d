// The spamd check against a real spamd on loopback (test/helpers/scanners.ts: shipped rules, no
// network tests): in ONE session a clean message (accepted with X-Spam-Status: No and its
// score), RSET, GTUBE (refused in the session), a message pre-labelled "X-Spam-Status: No"
// scoring between the thresholds (tagged, the forged fields removed), clean again. Failures:
// spamd stopped mid-test (tempfail and accept), a hung listener cut by the timeout, garbage;
// only what was answered 250 is stored.

import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { defaultConfig, type Config } from '../../src/config/types.ts';
import { Metrics } from '../../src/obs/metrics.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { CLEAN_BODY, mail, storedById } from '../helpers/milter-session.ts';
import { GTUBE, startGarbageListener, startHungListener, startSpamd } from '../helpers/scanners.ts';
import { startTestServer } from '../helpers/server.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

async function serverWithSpamd(t: { after: (fn: () => Promise<void>) => void }, port: number, spamd: Partial<Config['spamd']> = {}) {
  const config = defaultConfig();
  config.domains.local = ['example.test'];
  config.smtp.hostname = 'mx.example.test';
  config.spamd = { ...config.spamd, address: { kind: 'tcp', host: '127.0.0.1', port }, connectTimeoutSeconds: 2, commandTimeoutSeconds: 30, ...spamd };
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
      done();
    },
  });
  const metrics = new Metrics({ defaultMetrics: false });
  const pipeline = buildPipeline(config, pino({ level: 'debug' }, sink), null, { filterMetrics: metrics });
  assert.ok(pipeline !== null);
  const server = await startTestServer(config, { policy: pipeline });
  t.after(server.stop);
  return { ...server, lines, metrics };
}

async function session(port: number): Promise<SmtpClient> {
  const c = await SmtpClient.connect(port);
  await c.expect('', 220, 'greeting');
  await c.expect('EHLO client.example.test\r\n', 250);
  return c;
}

async function send(c: SmtpClient, message: string, code: number): Promise<string> {
  await c.expect('MAIL FROM:<a@example.test>\r\n', 250);
  await c.expect('RCPT TO:<bob@example.test>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  return (await c.expect(`${message}.\r\n`, code)).text;
}

const queued = (text: string): string => /queued as (\S+)/.exec(text)?.[1] ?? assert.fail(text);

test('spamd: in ONE session clean (tagged No), RSET, GTUBE refused, a forged X-Spam-Status replaced, clean; headers, log, metrics', { timeout: 180_000 }, async (t) => {
  const spamd = await startSpamd();
  t.after(spamd.stop);
  // add_header_score below what the plain test message scores, so one message is tagged Yes.
  const server = await serverWithSpamd(t, spamd.port, { addHeaderScore: -5, rejectScore: 15 });
  const strict = await serverWithSpamd(t, spamd.port, { addHeaderScore: 50 });
  const c = await session(strict.port);
  const clean = queued(await send(c, mail('Minutes', CLEAN_BODY, 1), 250));
  await c.expect('MAIL FROM:<a@example.test>\r\n', 250);
  await c.expect('RCPT TO:<bob@example.test>\r\n', 250);
  await c.expect('RSET\r\n', 250);
  assert.equal(await send(c, mail('Test', `This is the GTUBE:\r\n${GTUBE}`, 2), 554), '554 5.7.1 Message content rejected');
  const clean2 = queued(await send(c, mail('Minutes again', CLEAN_BODY, 3), 250));
  await c.expect('QUIT\r\n', 221);
  c.close();
  const stored = await storedById(strict.spoolDir);
  assert.deepEqual([...stored.keys()].sort(), [clean, clean2].sort());
  for (const content of stored.values()) {
    assert.match(content, /^X-Spam-Status: No, score=-?\d+(\.\d+)? required=50\.0\s+tests=\S+\s+scanner=spamd\r\nX-Spam-Score: -?\d/, content.slice(0, 400));
    assert.ok(!content.includes('X-Spam-Flag'));
  }
  assert.ok(strict.lines.some((l) => l.includes('spamd: spam refused') && l.includes('GTUBE')), strict.lines.join('\n'));
  const m = await strict.metrics.registry.metrics();
  assert.match(m, /^portcullis_content_filter_results_total\{filter="spamd",result="clean"\} 2$/m);
  assert.match(m, /^portcullis_content_filter_results_total\{filter="spamd",result="reject"\} 1$/m);

  // Tagged: the score is above add_header_score; the message's own X-Spam-* fields are gone.
  const c2 = await session(server.port);
  const forged = mail('Minutes', CLEAN_BODY, 4).replace('Subject: Minutes', 'Subject: Minutes\r\nX-Spam-Status: No, score=-100\r\nX-Spam-Flag: NO');
  const tagged = queued(await send(c2, forged, 250));
  c2.close();
  const content = (await storedById(server.spoolDir)).get(tagged)!;
  assert.match(content, /^X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=\S+ required=-5\.0\s+tests=\S+\s+scanner=spamd\r\nX-Spam-Score: /);
  assert.equal(content.match(/^X-Spam-Status:/gm)?.length, 1, content.slice(0, 600));
  assert.equal(content.match(/^X-Spam-Flag:/gm)?.length, 1);
});

test('spamd failures: stopped mid-test, hung, garbage: on_failure each time, nothing half-stored', { timeout: 180_000 }, async (t) => {
  const spamd = await startSpamd();
  const hung = await startHungListener();
  const garbage = await startGarbageListener(Buffer.from('SPAMD/1.1 0 EX_OK\r\nSpam: maybe\r\n\r\n'));
  t.after(spamd.stop);
  t.after(hung.close);
  t.after(garbage.close);
  const tempfail = await serverWithSpamd(t, spamd.port);
  const accept = await serverWithSpamd(t, spamd.port, { onFailure: 'accept' });
  const slow = await serverWithSpamd(t, hung.port, { commandTimeoutSeconds: 1 });
  const noise = await serverWithSpamd(t, garbage.port);
  const small = await serverWithSpamd(t, spamd.port, { maxMessageBytes: 1024 });

  let c = await session(tempfail.port);
  const ok = queued(await send(c, mail('Minutes', CLEAN_BODY, 1), 250));
  c.close();
  c = await session(slow.port);
  assert.equal(await send(c, mail('Minutes', CLEAN_BODY, 2), 451), '451 4.7.1 Content scanner unavailable, try again later');
  c.close();
  assert.ok(slow.lines.some((l) => l.includes('spamd failed') && l.includes('"code":"timeout"')), slow.lines.join('\n'));
  c = await session(noise.port);
  assert.equal(await send(c, mail('Minutes', CLEAN_BODY, 3), 451), '451 4.7.1 Content scanner unavailable, try again later');
  c.close();
  assert.ok(noise.lines.some((l) => l.includes('spamd failed') && l.includes('"code":"protocol"')), noise.lines.join('\n'));
  // Over max_message_bytes: not scored, passes without headers.
  c = await session(small.port);
  const big = queued(await send(c, mail('Big', 'x'.repeat(70).concat('\r\n').repeat(30), 4), 250));
  c.close();
  assert.ok(!(await storedById(small.spoolDir)).get(big)!.includes('X-Spam-'));

  await spamd.stop();
  c = await session(tempfail.port);
  assert.equal(await send(c, mail('Minutes', CLEAN_BODY, 5), 451), '451 4.7.1 Content scanner unavailable, try again later');
  c.close();
  c = await session(accept.port);
  const passed = queued(await send(c, mail('Test', `This is the GTUBE:\r\n${GTUBE}`, 6), 250));
  c.close();
  assert.deepEqual([...(await storedById(tempfail.spoolDir)).keys()], [ok]);
  assert.deepEqual([...(await storedById(accept.spoolDir)).keys()], [passed]);
  assert.ok(!(await storedById(accept.spoolDir)).get(passed)!.includes('X-Spam-'), 'unscored mail is not labelled');
  for (const s of [slow, noise]) assert.equal((await storedById(s.spoolDir)).size, 0);
  assert.match(await small.metrics.registry.metrics(), /result="too_large"\} 1$/m);
});
