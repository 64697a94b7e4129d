// The rspamd check over rspamd's HTTP protocol (/checkv2) against a real rspamd on loopback
// (test/helpers/scanners.ts; heavy to start, so one per file): in ONE session a clean message
// (accepted with X-Spam-Status: No, X-Spam-Score, X-Spam-Action), RSET, GTUBE (refused in the
// session), clean again; rspamd's own action honoured with use_scanner_action. Failures: rspamd
// stopped mid-test (tempfail and accept), a hung listener cut by the timeout, garbage; only what
// was answered 250 is stored. rspamd as a milter is milter-rspamd.test.ts.

import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { defaultConfig, type Config } from '../../src/config/types.ts';
import { Metrics } from '../../src/obs/metrics.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { CLEAN_BODY, mail, storedById } from '../helpers/milter-session.ts';
import { GTUBE, startGarbageListener, startHungListener, startRspamd } from '../helpers/scanners.ts';
import { startTestServer } from '../helpers/server.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

async function serverWithRspamd(t: { after: (fn: () => Promise<void>) => void }, port: number, rspamd: Partial<Config['rspamd']> = {}) {
  const config = defaultConfig();
  config.domains.local = ['example.test'];
  config.smtp.hostname = 'mx.example.test';
  config.rspamd = { ...config.rspamd, url: `http://127.0.0.1:${port}`, timeoutSeconds: 30, ...rspamd };
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

async function send(c: SmtpClient, message: string, code: number, rcpts = ['bob@example.test']): Promise<string> {
  await c.expect('MAIL FROM:<a@example.test>\r\n', 250);
  for (const r of rcpts) await c.expect(`RCPT TO:<${r}>\r\n`, 250);
  await c.expect('DATA\r\n', 354);
  return (await c.expect(`${message}.\r\n`, code)).text;
}

const queued = (text: string): string => /queued as (\S+)/.exec(text)?.[1] ?? assert.fail(text);

test('rspamd over HTTP: clean, RSET, GTUBE refused, clean in ONE session; its action with use_scanner_action; then stopped, hung, garbage', { timeout: 400_000 }, async (t) => {
  const rspamd = await startRspamd();
  t.after(rspamd.stop);
  const hung = await startHungListener();
  const garbage = await startGarbageListener(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello'));
  t.after(hung.close);
  t.after(garbage.close);
  const server = await serverWithRspamd(t, rspamd.httpPort);
  const own = await serverWithRspamd(t, rspamd.httpPort, { useScannerAction: true, rejectScore: null, addHeaderScore: 100 });
  const accept = await serverWithRspamd(t, rspamd.httpPort, { onFailure: 'accept' });
  const slow = await serverWithRspamd(t, hung.port, { timeoutSeconds: 1 });
  const noise = await serverWithRspamd(t, garbage.port);

  const c = await session(server.port);
  const ids = [queued(await send(c, mail('Minutes', CLEAN_BODY, 1), 250, ['bob@example.test', 'carol@example.test']))];
  await c.expect('MAIL FROM:<a@example.test>\r\n', 250);
  await c.expect('RCPT TO:<bob@example.test>\r\n', 250);
  await c.expect('RSET\r\n', 250);
  assert.equal(await send(c, mail('Test', `This is the GTUBE:\r\n${GTUBE}`, 2), 554), '554 5.7.1 Message content rejected');
  ids.push(queued(await send(c, mail('Minutes again', CLEAN_BODY, 3), 250)));
  await c.expect('QUIT\r\n', 221);
  c.close();
  const stored = await storedById(server.spoolDir);
  assert.deepEqual([...stored.keys()].sort(), [...ids].sort());
  for (const content of stored.values()) {
    assert.match(content, /^X-Spam-Status: No, score=-?[\d.]+\s+required=6\.0\s+tests=\S+\s+scanner=rspamd\r\nX-Spam-Score: -?[\d.]+\r\nX-Spam-Action: no action\r\n/, content.slice(0, 500));
  }
  assert.ok(server.lines.some((l) => l.includes('rspamd: spam refused') && l.includes('GTUBE')), server.lines.join('\n'));
  // rspamd saw the envelope: both recipients, the sender, the queue id (its log line).
  assert.match(rspamd.log(), new RegExp(`qid: <${ids[0]}>, ip: 127\\.0\\.0\\.1, from: <a@example\\.test>.*rcpts: <bob@example\\.test,carol@example\\.test>`));
  const m = await server.metrics.registry.metrics();
  assert.match(m, /^portcullis_content_filter_results_total\{filter="rspamd",result="clean"\} 2$/m);
  assert.match(m, /^portcullis_content_filter_results_total\{filter="rspamd",result="reject"\} 1$/m);

  // rspamd's own action: GTUBE is its "reject" although our reject_score is off and the
  // add-header score unreachable.
  const c2 = await session(own.port);
  assert.equal(await send(c2, mail('Test', `This is the GTUBE:\r\n${GTUBE}`, 4), 554), '554 5.7.1 Message content rejected');
  const ownId = queued(await send(c2, mail('Minutes', CLEAN_BODY, 5), 250));
  c2.close();
  assert.match((await storedById(own.spoolDir)).get(ownId)!, /^X-Spam-Status: No, score=\S+ required=15\.0/);

  // A hung scanner is cut by its timeout; garbage is an error; both the default.
  let c3 = await session(slow.port);
  assert.equal(await send(c3, mail('Minutes', CLEAN_BODY, 6), 451), '451 4.7.1 Content scanner unavailable, try again later');
  c3.close();
  assert.ok(slow.lines.some((l) => l.includes('rspamd failed') && l.includes('"code":"timeout"')), slow.lines.join('\n'));
  c3 = await session(noise.port);
  assert.equal(await send(c3, mail('Minutes', CLEAN_BODY, 7), 451), '451 4.7.1 Content scanner unavailable, try again later');
  c3.close();
  assert.ok(noise.lines.some((l) => l.includes('rspamd failed') && l.includes('not JSON')), noise.lines.join('\n'));

  // Stopped mid-test.
  await rspamd.stop();
  c3 = await session(server.port);
  assert.equal(await send(c3, mail('Minutes', CLEAN_BODY, 8), 451), '451 4.7.1 Content scanner unavailable, try again later');
  c3.close();
  assert.ok(server.lines.some((l) => l.includes('rspamd failed') && l.includes('"code":"connect"')), server.lines.join('\n'));
  c3 = await session(accept.port);
  const passed = queued(await send(c3, mail('Test', `This is the GTUBE:\r\n${GTUBE}`, 9), 250));
  c3.close();
  assert.equal((await storedById(server.spoolDir)).size, 2, 'nothing more stored');
  assert.deepEqual([...(await storedById(accept.spoolDir)).keys()], [passed]);
  for (const s of [slow, noise]) assert.equal((await storedById(s.spoolDir)).size, 0);
});
