// Verdict memory over a real socket: the seed report's transcript (a DATA-time greylist
// tempfail, RSET, a second transaction from another sender to the same recipient) is refused
// again, through the real connection, pipeline and spool.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { defaultConfig } from '../../src/config/types.ts';
import type { Check } from '../../src/policy/check.ts';
import { PolicyPipeline } from '../../src/policy/pipeline.ts';
import { reply } from '../../src/protocol/replies.ts';
import { startTestServer } from '../helpers/server.ts';
import { runSocket } from '../helpers/socket-runner.ts';
import { parseTranscript } from '../helpers/transcript.ts';

const SEED = `
S: 220 *
C: EHLO spam.example
S: 250-*
S: 250-*
S: 250-*
S: 250-*
S: 250-*
S: 250-*
S: 250-*
S: 250-*
S: 250 *
C: MAIL FROM:<first@spam.example>
S: 250 2.1.0 Sender ok
C: RCPT TO:<alice@example.test>
S: 250 2.1.5 Recipient ok
C: DATA
S: 354 *
C: Subject: one
C:
C: buy now
C: .
S: 451 4.7.1 Greylisted, try again later
C: RSET
S: 250 2.0.0 Reset
C: MAIL FROM:<second@other.example>
S: 250 2.1.0 Sender ok
C: RCPT TO:<alice@example.test>
S: 250 2.1.5 Recipient ok
C: DATA
S: 354 *
C: Subject: two
C:
C: buy now
C: .
S: 451 4.7.1 Greylisted, try again later
@spool-count 0
C: QUIT
S: 221 *
`;

test('rset-launders-greylist (seed report, DATA stage) is refused over a real socket', async (t) => {
  // Tempfail on the first call only: the second 451 must come from verdict memory (a stub that
  // refused every call would pass with memory switched off).
  let calls = 0;
  const greylist: Check = {
    name: 'greylist',
    stages: ['data'],
    run: () =>
      calls++ === 0
        ? { action: 'tempfail', reply: reply(451, '4.7.1', 'Greylisted, try again later'), check: 'greylist', reason: 'new triplet' }
        : { action: 'continue' },
  };
  const pipeline = new PolicyPipeline([greylist], { log: pino({ level: 'silent' }), defaultTimeoutMs: 1000 });
  const transcript = parseTranscript('rset-launders-greylist', SEED);
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  cfg.smtp.hostname = 'mx.example.test';
  const server = await startTestServer(cfg, { policy: pipeline });
  t.after(() => server.stop());
  await runSocket(transcript, server.port, server.spoolDir);
  assert.equal(calls, 1, 'the second transaction got the remembered verdict without the check running');
});
