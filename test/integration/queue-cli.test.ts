// `portcullis queue` against a running server (real processes): a message to a next hop that
// refuses connections is deferred with its reason; hold, release, flush, bounce (a DSN from <>
// appears in the queue), delete and shape act on it and are logged with the queue id.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runCli, startCliServer } from '../helpers/cli-server.ts';
import { smtpConnect } from '../helpers/smtp-client.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('portcullis queue: list, show, hold, release, flush, bounce, delete, shape', { timeout: 90_000 }, async (t) => {
  const server = await startCliServer({ workers: 2, localDomains: ['example.test', 'sender.test'] });
  t.after(() => server.cleanup());
  const q = async (...args: string[]): Promise<{ code: number | null; out: string; err: string }> => {
    const r = await runCli(server.configPath, ['queue', ...args]);
    return { code: r.code, out: r.stdout.toString(), err: r.stderr };
  };
  assert.deepEqual(await q('list'), { code: 0, out: 'queue is empty\n', err: '' });

  const c = await smtpConnect(server.port);
  await c.send('EHLO client.example');
  await c.send('MAIL FROM:<bob@sender.test>');
  await c.send('RCPT TO:<alice@example.test>');
  await c.send('DATA');
  const id = /queued as (\S+)/.exec(await c.send('Subject: q\r\n\r\nqueued\r\n.'))![1];
  await c.send('QUIT');
  c.close();

  // The test routes go to a closed port: the attempt is deferred, with the reason.
  let list = '';
  for (let i = 0; i < 100 && !/deferred/.test(list); i++, await sleep(100)) list = (await q('list')).out;
  assert.match(list, new RegExp(`^${id} \\d+ \\S+ <bob@sender\\.test>\\n    <alice@example\\.test> deferred next \\S+ \\(4\\d\\d`, 'm'));
  assert.match(list, /-- 1 message, \d+ octets\n$/);
  const shown = JSON.parse((await q('show', id)).out) as { queueId: string; recipients: Array<{ status: string }> };
  assert.equal(shown.queueId, id);
  assert.equal(shown.recipients[0].status, 'deferred');
  assert.match((await q('shape')).out, /^destination +total .*\nexample\.test +1 /);

  assert.deepEqual(await q('hold', id), { code: 0, out: `${id}: held\n`, err: '' });
  assert.match((await q('list')).out, new RegExp(`^${id}!held `));
  assert.deepEqual(await q('release', id), { code: 0, out: `${id}: released\n`, err: '' });
  assert.doesNotMatch((await q('list')).out, /!held/);
  assert.match((await q('flush')).out, /^woken: \d+ message\(s\)\n$/);

  // Bounce: the recipient fails, a DSN from <> to the sender is queued (and deferred too).
  assert.deepEqual(await q('bounce', id), { code: 0, out: `${id}: bounced\n`, err: '' });
  let after = '';
  for (let i = 0; i < 100 && !/ <> *\n|<>\n/.test(after); i++, await sleep(100)) after = (await q('list')).out;
  const dsn = /^(\S+) \d+ \S+ <>\n    <bob@sender\.test> /m.exec(after);
  assert.ok(dsn !== null, `a DSN to the sender in the queue:\n${after}`);
  assert.doesNotMatch(after, new RegExp(`^${id} `, 'm'), 'the bounced message is done');

  assert.deepEqual(await q('delete', dsn[1]), { code: 0, out: `${dsn[1]}: deleted\n`, err: '' });
  assert.deepEqual(await q('list'), { code: 0, out: 'queue is empty\n', err: '' });
  const missing = await q('hold', 'NOSUCHID');
  assert.equal(missing.code, 1);
  assert.match(missing.err, /no message NOSUCHID in the queue/);
  const usage = await q('frobnicate');
  assert.equal(usage.code, 2);
  assert.match(usage.err, /usage: portcullis queue list/);

  const log = server.logText();
  for (const op of ['hold', 'release', 'bounce', 'delete']) assert.match(log, new RegExp(`"op":"${op}".*"msg":"queue ${op} by the operator"|"msg":"queue ${op} by the operator"`));
  assert.match(log, new RegExp(`"queueId":"${id}","op":"hold"`));

  await server.stop();
  const stopped = await q('list');
  assert.equal(stopped.code, 1);
  assert.match(stopped.err, /no server is running on the spool .* \(the queue commands need it running\)/);
});
