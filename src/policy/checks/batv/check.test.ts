// The BATV check through the real machine and pipeline: a bounce (MAIL FROM:<>) to a local user of
// a BATV domain passes only at a valid, unexpired tag; forged, expired, untagged and unknown-key
// tags are refused 550 5.7.1 (a verdict: counted, and remembered by the session after RSET);
// `tag` adds a header instead, `accept` only logs; mail with a real sender, other domains,
// exceptions and Postmaster are never looked at.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { defaultConfig } from '../../../config/types.ts';
import { batvPolicy, signReversePath, type BatvKey } from '../../../delivery/batv.ts';
import { formatReply } from '../../../protocol/replies.ts';
import { machineConfigFrom } from '../../../server/machine-config.ts';
import { MachineDriver } from '../../../../test/helpers/drive.ts';
import { PolicyPipeline } from '../../pipeline.ts';
import { BATV_HEADER, batvCheck } from './check.ts';
import type { BatvAction } from './config.ts';

const DAY = 86_400_000;
const NOW = Date.UTC(2026, 11, 1, 12, 0, 0);
const KEY: BatvKey = { id: 0, secret: Buffer.from('a secret of more than sixteen bytes') };
const POLICY = batvPolicy({ domains: ['example.test'], maxAgeSeconds: 7 * 86_400, exceptions: ['lists@example.test'] }, [KEY]);
const REFUSED = '550 5.7.1 Bounce rejected: not sent to a valid return address of this domain';
const OK = '250 2.1.5 Recipient ok';

function tag(address: string, atMs = NOW): string {
  return signReversePath(address, POLICY, atMs);
}

/** One session through a pipeline holding the BATV check; the replies after HELO, the stored messages and the verdicts counted. */
async function session(input: string, action: BatvAction = 'reject', nowMs = NOW, greeting = 'HELO') {
  const counted: string[] = [];
  const logged: string[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void logged.push(line) });
  const pipeline = new PolicyPipeline([batvCheck({ policy: POLICY, action, now: () => nowMs, log })], {
    log,
    defaultTimeoutMs: 1000,
    now: () => nowMs,
    onVerdict: (check, stage, a) => void counted.push(`${check}@${stage}=${a}`),
  });
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test', 'other.test'];
  // The tarpit is off: these sessions play more refusals than tarpit.free_errors and expect each
  // reply at once (the tarpit has tests of its own).
  const { tarpit: _tarpit, ...machine } = machineConfigFrom(cfg, { isTlsAvailable: false, policyStages: pipeline.stages, maxPolicyRefusals: 10 });
  const d = new MachineDriver(machine, {
    clock: { now: () => nowMs, advance: () => undefined },
    peer: '198.51.100.7',
    sessionId: 'S',
    policy: pipeline.run,
    commits: 'accept',
    isConnecting: false,
    stepMs: 0,
  });
  d.connect();
  await d.settle();
  await d.play(`${greeting} mx.sender.example\r\n${input}`);
  const replies = d.replies.map((r) => formatReply(r).trimEnd().split('\r\n').pop()!).slice(2);
  return { replies, stored: d.stored.map((b) => b.toString('latin1')), counted, logged };
}

const bounceTo = (rcpt: string) => `MAIL FROM:<>\r\nRCPT TO:<${rcpt}>\r\n`;

test('batv: a bounce to a valid tag is accepted, with the tag kept in the envelope', async () => {
  const r = await session(`${bounceTo(tag('alice@example.test'))}DATA\r\nSubject: bounce\r\n\r\nx\r\n.\r\n`);
  assert.deepEqual(r.replies.slice(0, 2), ['250 2.1.0 Sender ok', OK]);
  assert.match(r.replies.at(-1)!, /^250 2.0.0 Ok: queued/);
  assert.ok(!r.stored[0].includes(BATV_HEADER));
});

test('batv: untagged, forged, expired, malformed and unknown-key bounces are refused 550 5.7.1 and counted', async () => {
  const good = tag('alice@example.test');
  const forged = `${good.slice(0, 9)}${good[9] === 'a' ? 'b' : 'a'}${good.slice(10)}`;
  const cases = {
    untagged: 'alice@example.test',
    forged,
    'other address': good.replace('alice', 'bob'),
    expired: tag('alice@example.test', NOW - 9 * DAY),
    malformed: 'prvs=zz=alice@example.test',
    'unknown key': `prvs=7${good.slice(6)}`,
  };
  for (const [what, rcpt] of Object.entries(cases)) {
    const r = await session(bounceTo(rcpt));
    assert.deepEqual(r.replies, ['250 2.1.0 Sender ok', REFUSED], what);
    assert.deepEqual(r.counted, ['batv@rcpt=reject'], what);
  }
});

test('batv: a refused bounce address is refused again after RSET without the check (verdict memory)', async () => {
  const r = await session(`${bounceTo('alice@example.test')}RSET\r\n${bounceTo('alice@example.test')}${bounceTo('bob@example.test')}`);
  assert.deepEqual(r.replies, ['250 2.1.0 Sender ok', REFUSED, '250 2.0.0 Reset', '250 2.1.0 Sender ok', REFUSED, '503 5.5.1 Sender already specified', REFUSED]);
});

test('batv: real senders, other domains, exceptions and Postmaster are never checked', async () => {
  const r = await session(
    'MAIL FROM:<friend@sender.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<prvs=0000000000=alice@example.test>\r\nRSET\r\n' +
      `${bounceTo('carol@other.test')}RCPT TO:<Lists@example.test>\r\nRCPT TO:<postmaster@example.test>\r\nRCPT TO:<Postmaster>\r\n`,
  );
  assert.deepEqual(r.replies, ['250 2.1.0 Sender ok', OK, OK, '250 2.0.0 Reset', '250 2.1.0 Sender ok', OK, OK, OK, OK]);
  assert.deepEqual(r.counted.filter((c) => c.endsWith('reject')), []);
});

test('batv: action "tag" accepts the bounce and marks the message; "accept" only logs', async () => {
  const tagged = await session(`${bounceTo('alice@example.test')}${bounceTo(tag('bob@example.test'))}DATA\r\nSubject: x\r\n\r\nx\r\n.\r\n`, 'tag');
  assert.deepEqual(tagged.replies.slice(0, 2), ['250 2.1.0 Sender ok', OK]);
  assert.match(tagged.stored[0], /^X-Portcullis-BATV: untagged rcpt=<alice@example\.test>\r\n/m);
  assert.equal(tagged.stored[0].match(/X-Portcullis-BATV/g)?.length, 1, 'only the failed recipient is named');
  const accepted = await session(`${bounceTo('alice@example.test')}DATA\r\nSubject: x\r\n\r\nx\r\n.\r\n`, 'accept');
  assert.deepEqual(accepted.replies.slice(0, 2), ['250 2.1.0 Sender ok', OK]);
  assert.ok(!accepted.stored[0].includes(BATV_HEADER));
  assert.ok(accepted.logged.some((l) => l.includes('bounce to an untagged address: <alice@example.test>')), 'logged');
});

test('batv: a hostile recipient cannot inject a header line through "tag"', async () => {
  const r = await session('MAIL FROM:<> SMTPUTF8\r\nRCPT TO:<"x\\"\\\\y: Bcc"@example.test>\r\nRCPT TO:<dé@example.test>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n', 'tag', NOW, 'EHLO');
  assert.deepEqual(r.replies.slice(0, 3), ['250 2.1.0 Sender ok', OK, OK]);
  const stored = r.stored[0];
  assert.equal(stored.match(/X-Portcullis-BATV/g)?.length, 2);
  assert.ok(!/^Bcc:/m.test(stored));
  for (const line of stored.split('\r\n')) if (line.startsWith(BATV_HEADER)) assert.match(line, /^[\x20-\x7e]+$/);
});
