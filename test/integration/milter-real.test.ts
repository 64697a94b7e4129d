// The milter client against real milters on loopback (test/helpers/milter-peers.ts): opendkim
// signing, whose DKIM-Signature mailauth verifies on the stored message (the public key served
// by a resolver function: the filter is real, only DNS is not asked); spamass-milter with spamd
// tagging clean mail and refusing GTUBE. Each in ONE SMTP session: a clean message, RSET, a GTUBE
// message, a clean message; every message of the session goes through the filter.
// rspamd has its own file (milter-rspamd.test.ts): it is heavy to start.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { startOpendkim, startSpamassMilter } from '../helpers/milter-peers.ts';
import { cleanGtubeClean, serverWithMilter, storedById } from '../helpers/milter-session.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

// Over a UNIX socket with simple/simple: the signature then covers its own field's folding
// exactly, so it verifies only if the folds opendkim sent are stored as they were.
for (const [unix, canonicalization] of [[false, 'relaxed/relaxed'], [true, 'simple/simple']] as const) {
  test(`opendkim (signing, ${canonicalization}) as a milter over ${unix ? 'a UNIX socket' : 'TCP'}: every message of one session is signed, and mailauth verifies each stored signature`, { timeout: 120_000 }, async (t) => {
    const dkim = await startOpendkim({ unix, canonicalization });
    t.after(dkim.stop);
    const server = await serverWithMilter(t, dkim.socketPath ?? dkim.port);
    const { ids } = await cleanGtubeClean(server.port, 250);
    assert.equal(ids.length, 3);
    const messages = await storedById(server.spoolDir);
    const resolver = async (name: string, type: string): Promise<string[][]> => {
      if (type === 'TXT' && name === `${dkim.selector}._domainkey.${dkim.domain}`) return [[dkim.publicKeyTxt]];
      throw Object.assign(new Error(`no ${type} for ${name}`), { code: 'ENOTFOUND' });
    };
    for (const id of ids) {
      const content = messages.get(id);
      assert.ok(content !== undefined, id);
      assert.match(content, new RegExp(`^DKIM-Signature: v=1; a=rsa-sha256; c=${canonicalization}; d=example\\.test;(\r\n\t| )s=sel1;`), `${id}: signed\n${dkim.log()}`);
      const result = await dkimVerify(Buffer.from(content, 'latin1'), { resolver });
      assert.equal(result.results.length, 1);
      assert.equal(result.results[0].status.result, 'pass', `${id}: ${JSON.stringify(result.results[0].status)}`);
    }
    // The filter stopped mid-test: the next session's mail gets on_failure (tempfail), nothing is stored.
    await dkim.stop();
    const c = await SmtpClient.connect(server.port);
    await c.expect('', 220, 'greeting');
    await c.expect('EHLO client.example.test\r\n', 250);
    assert.equal((await c.expect('MAIL FROM:<a@example.test>\r\n', 451)).text, '451 4.7.1 Content filter unavailable, try again later');
    await c.expect('QUIT\r\n', 221);
    c.close();
    assert.equal((await storedById(server.spoolDir)).size, 3);
  });
}

test('spamass-milter with spamd as a milter: clean mail tagged X-Spam-Status: No, GTUBE refused in the session (-r), in one session', { timeout: 240_000 }, async (t) => {
  const sa = await startSpamassMilter(['-r', '15']);
  t.after(sa.stop);
  const server = await serverWithMilter(t, sa.port);
  const { ids, gtube } = await cleanGtubeClean(server.port, 550);
  assert.match(gtube, /^550 5\.7\.1 /, gtube);
  assert.equal(ids.length, 2);
  const messages = await storedById(server.spoolDir);
  assert.deepEqual([...messages.keys()].sort(), [...ids].sort(), 'the refused message is not stored');
  for (const id of ids) {
    const content = messages.get(id)!;
    assert.match(content, /\r\nX-Spam-Status: No, score=/, `${id}: tagged\n${sa.log().slice(-2000)}`);
    assert.match(content, /\r\nX-Spam-Checker-Version: SpamAssassin/);
  }
});
