// The clamd check against a real clamd on loopback (test/helpers/scanners.ts: a one-line EICAR
// database): a clean message passes; in ONE session a clean message, RSET, EICAR (refused in the
// session), clean (accepted), a pipelined EICAR message, an EICAR message sent with BDAT, and a
// smuggling attempt whose hidden second message carries EICAR (refused as the one message it
// is); the virus in the log, the metric and verdict memory. Then the failures: clamd stopped
// mid-test, a hung listener cut by the command timeout, garbage, clamd's own stream limit and
// ours; each gets on_failure, and only what was answered 250 is stored.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { pino } from 'pino';
import { defaultConfig, type Config } from '../../src/config/types.ts';
import { Metrics } from '../../src/obs/metrics.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { listVerdicts } from '../../src/policy/verdict-memory.ts';
import { openStateStore } from '../../src/store/open.ts';
import type { StateStore } from '../../src/store/store.ts';
import { CLEAN_BODY, mail, storedById } from '../helpers/milter-session.ts';
import { EICAR, EICAR_SIGNATURE, startClamd, startGarbageListener, startHungListener } from '../helpers/scanners.ts';
import { startTestServer } from '../helpers/server.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

type Where = { port: number } | { path: string };

async function serverWithClamd(t: { after: (fn: () => Promise<void>) => void }, where: Where, clamd: Partial<Config['clamd']> = {}, opts: { store?: StateStore; smtp?: Partial<Config['smtp']> } = {}) {
  const config = defaultConfig();
  config.domains.local = ['example.test'];
  config.smtp.hostname = 'mx.example.test';
  Object.assign(config.smtp, opts.smtp ?? {});
  // The one-session test refuses four messages; three refusals close a session by default.
  config.verdicts.maxRefusalsPerSession = 10;
  config.clamd = {
    ...config.clamd,
    address: 'path' in where ? { kind: 'unix', path: where.path } : { kind: 'tcp', host: '127.0.0.1', port: where.port },
    connectTimeoutSeconds: 2,
    commandTimeoutSeconds: 10,
    ...clamd,
  };
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
      done();
    },
  });
  const metrics = new Metrics({ defaultMetrics: false });
  const pipeline = buildPipeline(config, pino({ level: 'info' }, sink), opts.store ?? null, { filterMetrics: metrics });
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

/** MAIL, RCPT, DATA and the message, one command at a time; the reply to the message. */
async function send(c: SmtpClient, message: string, code: number): Promise<string> {
  await c.expect('MAIL FROM:<a@example.test>\r\n', 250);
  await c.expect('RCPT TO:<bob@example.test>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  return (await c.expect(`${message}.\r\n`, code)).text;
}

const queued = (text: string): string => /queued as (\S+)/.exec(text)?.[1] ?? assert.fail(text);
const eicarMail = (n: number): string => mail('Test file', `The test file:\r\n${EICAR}`, n);

test('clamd over TCP: in ONE session clean, RSET, EICAR refused, clean, pipelined EICAR, EICAR by BDAT, smuggled EICAR; log, metric and verdict memory', { timeout: 120_000 }, async (t) => {
  const clamd = await startClamd();
  t.after(clamd.stop);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-clamd-store-'));
  const store = await openStateStore('sqlite', { dir });
  t.after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  // Smuggling needs bare line endings let in (normalized) to reach the content stage at all.
  const server = await serverWithClamd(t, { port: clamd.port }, { rememberSeconds: 600 }, { store, smtp: { bareLineEndings: 'normalize' } });
  const c = await session(server.port);
  const ids: string[] = [];
  ids.push(queued(await send(c, mail('Minutes', CLEAN_BODY, 1), 250)));
  await c.expect('MAIL FROM:<a@example.test>\r\n', 250);
  await c.expect('RCPT TO:<bob@example.test>\r\n', 250);
  await c.expect('RSET\r\n', 250);
  assert.equal(await send(c, eicarMail(2), 554), '554 5.7.1 Message content rejected');
  ids.push(queued(await send(c, mail('Minutes again', CLEAN_BODY, 3), 250)));

  // Pipelined: MAIL, RCPT and DATA in one write (RFC 2920), then the message.
  c.write('MAIL FROM:<a@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n');
  assert.equal((await c.reply())?.code, 250);
  assert.equal((await c.reply())?.code, 250);
  assert.equal((await c.reply())?.code, 354);
  assert.equal((await c.expect(`${eicarMail(4)}.\r\n`, 554)).text, '554 5.7.1 Message content rejected');

  // BDAT (RFC 3030), in two chunks, EICAR split across them.
  const bdat = Buffer.from(eicarMail(5), 'latin1');
  const cut = bdat.indexOf('EICAR-STANDARD') + 5;
  await c.expect('MAIL FROM:<a@example.test>\r\n', 250);
  await c.expect('RCPT TO:<bob@example.test>\r\n', 250);
  await c.expect(`BDAT ${cut}\r\n${bdat.subarray(0, cut).toString('latin1')}`, 250);
  assert.equal((await c.expect(`BDAT ${bdat.length - cut} LAST\r\n${bdat.subarray(cut).toString('latin1')}`, 554)).text, '554 5.7.1 Message content rejected');

  // Smuggling: a clean-looking message with a bare-LF "end" and a hidden second transaction
  // carrying EICAR. Only CRLF.CRLF ends data, so it is one message, scanned whole, refused with
  // one reply; nothing of the hidden transaction is answered.
  await c.expect('MAIL FROM:<a@example.test>\r\n', 250);
  await c.expect('RCPT TO:<bob@example.test>\r\n', 250);
  await c.expect('DATA\r\n', 354);
  const smuggled = `${mail('Hello', 'innocent', 6)}\n.\nMAIL FROM:<admin@example.test>\nRCPT TO:<bob@example.test>\nDATA\n${eicarMail(7).replace(/\r\n/g, '\n')}\r\n.\r\n`;
  assert.equal((await c.expect(smuggled, 554)).text, '554 5.7.1 Message content rejected');
  await c.expect('NOOP\r\n', 250, 'the next reply is for NOOP: nothing else was answered');
  ids.push(queued(await send(c, mail('Last', CLEAN_BODY, 8), 250)));
  await c.expect('QUIT\r\n', 221);
  c.close();

  const stored = await storedById(server.spoolDir);
  assert.deepEqual([...stored.keys()].sort(), [...ids].sort(), 'exactly the clean messages are stored');
  for (const content of stored.values()) assert.ok(!content.includes('EICAR'));

  const found = server.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'clamd: virus found, message refused');
  assert.equal(found.length, 4, server.lines.join('\n'));
  for (const l of found) assert.equal(l.signature, EICAR_SIGNATURE);
  const metrics = await server.metrics.registry.metrics();
  assert.match(metrics, /^portcullis_virus_found_total\{filter="clamd"\} 4$/m);
  assert.match(metrics, /^portcullis_content_filter_results_total\{filter="clamd",result="clean"\} 3$/m);
  assert.match(metrics, /^portcullis_content_filter_results_total\{filter="clamd",result="reject"\} 4$/m);

  const remembered = await listVerdicts(store, null);
  assert.equal(remembered.length, 4);
  for (const v of remembered) {
    assert.equal(v.check, 'clamd');
    assert.equal(v.network, '127.0.0.0/24');
    assert.equal(v.reason, `virus ${EICAR_SIGNATURE}`);
    assert.match(v.reply, /^554 5\.7\.1 Message content rejected/);
  }
});

test('clamd: smuggling variants, each hiding an EICAR message behind a bare end of data, are each one message, refused with one reply', { timeout: 60_000 }, async (t) => {
  const clamd = await startClamd();
  t.after(clamd.stop);
  const server = await serverWithClamd(t, { port: clamd.port }, {}, { smtp: { bareLineEndings: 'normalize' } });
  const c = await session(server.port);
  for (const [i, variant] of ['\n.\r\n', '\r.\r', '\r\n.\n', '\n\n.\n\n', '\r\n\x00.\r\n'].entries()) {
    await c.expect('MAIL FROM:<a@example.test>\r\n', 250);
    await c.expect('RCPT TO:<bob@example.test>\r\n', 250);
    await c.expect('DATA\r\n', 354);
    const smuggled = `${mail('Hello', 'innocent', i)}${variant}MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n${eicarMail(i + 10)}\r\n.\r\n`;
    assert.equal((await c.expect(smuggled, 554, JSON.stringify(variant))).text, '554 5.7.1 Message content rejected');
    await c.expect('NOOP\r\n', 250, `${JSON.stringify(variant)}: nothing else was answered`);
  }
  await c.expect('QUIT\r\n', 221);
  c.close();
  assert.equal((await storedById(server.spoolDir)).size, 0);
});

test('clamd: a body spilled to its file is scanned whole (EICAR at its end refused; a clean one stored intact)', { timeout: 60_000 }, async (t) => {
  const clamd = await startClamd();
  t.after(clamd.stop);
  const server = await serverWithClamd(t, { port: clamd.port }, {}, { smtp: { bodyMemoryBytes: 65_536 } });
  const filler = 'The quick brown fox jumps over the lazy dog, again and again and again.\r\n'.repeat(4000);
  const c = await session(server.port);
  assert.equal(await send(c, mail('Big', `${filler}${EICAR}`, 1), 554), '554 5.7.1 Message content rejected');
  const id = queued(await send(c, mail('Big', filler, 2), 250));
  await c.expect('QUIT\r\n', 221);
  c.close();
  const stored = await storedById(server.spoolDir);
  assert.deepEqual([...stored.keys()], [id]);
  assert.ok(stored.get(id)!.endsWith(`${filler}\r\n`));
  assert.ok(stored.get(id)!.length > 290_000);
});

test('clamd over a UNIX socket: clean passes, EICAR (base64 in a MIME part) is refused', { timeout: 60_000 }, async (t) => {
  const clamd = await startClamd({ unix: true });
  t.after(clamd.stop);
  const server = await serverWithClamd(t, { path: clamd.socketPath! });
  const c = await session(server.port);
  const id = queued(await send(c, mail('Minutes', CLEAN_BODY, 1), 250));
  const mime = [
    'From: a@example.test',
    'To: bob@example.test',
    'Subject: attachment',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="b1"',
    '',
    '--b1',
    'Content-Type: text/plain',
    '',
    'see attached',
    '--b1',
    'Content-Type: application/octet-stream; name="eicar.com"',
    'Content-Transfer-Encoding: base64',
    '',
    Buffer.from(EICAR).toString('base64'),
    '--b1--',
    '',
  ].join('\r\n');
  assert.equal(await send(c, mime, 554), '554 5.7.1 Message content rejected');
  await c.expect('QUIT\r\n', 221);
  c.close();
  assert.deepEqual([...(await storedById(server.spoolDir)).keys()], [id]);
});

test('clamd failures: stopped mid-test, hung, garbage, over its stream limit and ours: on_failure each time, nothing half-stored', { timeout: 120_000 }, async (t) => {
  const clamd = await startClamd({ streamMaxLength: '4K' });
  const hung = await startHungListener();
  const garbage = await startGarbageListener(Buffer.from('HTTP/1.0 200 OK\r\n\r\nhello\0'));
  t.after(clamd.stop);
  t.after(hung.close);
  t.after(garbage.close);
  const tempfail = await serverWithClamd(t, { port: clamd.port });
  const accept = await serverWithClamd(t, { port: clamd.port }, { onFailure: 'accept' });
  const ours = await serverWithClamd(t, { port: clamd.port }, { streamMaxBytes: 2048 });
  const slow = await serverWithClamd(t, { port: hung.port }, { commandTimeoutSeconds: 1 });
  const noise = await serverWithClamd(t, { port: garbage.port });

  const big = mail('Big', 'x'.repeat(78).concat('\r\n').repeat(100), 9);
  // Over clamd's StreamMaxLength (4 KiB) but under ours: clamd's "INSTREAM size limit exceeded".
  let c = await session(tempfail.port);
  const ok = queued(await send(c, mail('Minutes', CLEAN_BODY, 1), 250));
  // clamd answers and closes at once; when its reset reaches us before its reply the reply is
  // lost, and the scan is a failure instead: refused all the same.
  assert.match(await send(c, big, 451), /^451 4\.(3\.4 Message too large for the content scanner|7\.1 Content scanner unavailable), try again later$/);
  c.close();
  assert.ok(tempfail.lines.some((l) => l.includes('INSTREAM size limit exceeded') || l.includes('is clamd\'s StreamMaxLength below')), tempfail.lines.join('\n'));
  // Over ours: answered before anything is sent.
  c = await session(ours.port);
  assert.equal(await send(c, big, 451), '451 4.3.4 Message too large for the content scanner, try again later');
  c.close();
  assert.ok(ours.lines.some((l) => l.includes('over clamd.stream_max_bytes (2048)')), ours.lines.join('\n'));
  // A hung scanner: cut by the command timeout.
  c = await session(slow.port);
  assert.equal(await send(c, mail('Minutes', CLEAN_BODY, 2), 451), '451 4.7.1 Content scanner unavailable, try again later');
  c.close();
  assert.equal(hung.accepted(), 1);
  assert.ok(slow.lines.some((l) => l.includes('"code":"timeout"') && l.includes('clamd failed')), slow.lines.join('\n'));
  // Garbage: an error, the default.
  c = await session(noise.port);
  assert.equal(await send(c, mail('Minutes', CLEAN_BODY, 3), 451), '451 4.7.1 Content scanner unavailable, try again later');
  c.close();
  assert.ok(noise.lines.some((l) => l.includes('"code":"protocol"') && l.includes('not a clamd reply')), noise.lines.join('\n'));

  // clamd stopped mid-test: tempfail refuses, accept passes the message unscanned.
  await clamd.stop();
  c = await session(tempfail.port);
  assert.equal(await send(c, mail('Minutes', CLEAN_BODY, 4), 451), '451 4.7.1 Content scanner unavailable, try again later');
  c.close();
  c = await session(accept.port);
  const passed = queued(await send(c, eicarMail(5), 250));
  c.close();
  assert.ok(accept.lines.some((l) => l.includes('"code":"connect"') && l.includes('"onFailure":"accept"')), accept.lines.join('\n'));

  assert.deepEqual([...(await storedById(tempfail.spoolDir)).keys()], [ok]);
  assert.deepEqual([...(await storedById(accept.spoolDir)).keys()], [passed]);
  for (const s of [ours, slow, noise]) assert.equal((await storedById(s.spoolDir)).size, 0);
  assert.match(await ours.metrics.registry.metrics(), /^portcullis_content_filter_results_total\{filter="clamd",result="too_large"\} 1$/m);
  assert.match(await slow.metrics.registry.metrics(), /result="failed"\} 1$/m);
});
