// The milter client against rspamd's proxy worker in milter mode (the strict peer: its macro
// format, its all-no-reply OPTNEG answer): in ONE SMTP session a clean message passes, and after
// RSET a GTUBE message is refused with rspamd's own 554 reply, then a clean one passes again.
// rspamd is started once for this file (~8 s on a quiet machine, a minute under load; several hundred MB): test/helpers/milter-peers.ts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startRspamd } from '../helpers/milter-peers.ts';
import { cleanGtubeClean, serverWithMilter, storedById } from '../helpers/milter-session.ts';

test('rspamd in milter mode: clean passes, GTUBE is refused in the session with rspamd\'s 554, clean passes again, in one session', { timeout: 400_000 }, async (t) => {
  const rspamd = await startRspamd();
  t.after(rspamd.stop);
  const server = await serverWithMilter(t, rspamd.port);
  const { ids, gtube } = await cleanGtubeClean(server.port, 554);
  assert.match(gtube, /^554 5\.7\.1 Gtube pattern/, `${gtube}\n${rspamd.log().slice(-3000)}`);
  assert.equal(ids.length, 2);
  const messages = await storedById(server.spoolDir);
  assert.deepEqual([...messages.keys()].sort(), [...ids].sort(), 'the refused message is not stored');
});
