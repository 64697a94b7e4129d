// The reset table (reset.ts), cell by cell, through the machine: each event is applied to a
// session that has a HELO identity, non-zero counters, a non-empty verdict log and something in
// its transaction slot, and every column is checked against RESET_RULES. A change that made an
// event clear the verdict log or a counter (laundering a refusal, or max_transactions) fails here.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import type { Check } from '../policy/check.ts';
import { PolicyPipeline } from '../policy/pipeline.ts';
import { MachineDriver, type PolicyRequest, testMachineConfig } from '../../test/helpers/drive.ts';
import type { MachineConfig } from './machine-config.ts';
import { reply } from './replies.ts';
import { RESET_RULES, type ResetEvent } from './reset.ts';
import type { SessionSecurity } from './session.ts';
import type { PolicyStage, PolicyVerdict } from './verdict.ts';

function config(): MachineConfig {
  return testMachineConfig({ maxMessageBytes: 1024, maxErrors: 50, maxPolicyRefusals: 10, policyStages: new Set<PolicyStage>(['helo', 'rcpt']) });
}

/** Refuses the recipient bad@example.test and the HELO name evil.example; no opinion otherwise. */
function policy(request: PolicyRequest): PolicyVerdict {
  if (request.stage === 'rcpt' && request.recipient?.address === 'bad@example.test') {
    return { action: 'reject', reply: reply(550, '5.1.1', 'No such user'), check: 'stub', reason: 'unknown', key: 'bad@example.test' };
  }
  if (request.stage === 'helo' && request.heloName === 'evil.example') {
    return { action: 'reject', reply: reply(550, '5.7.1', 'Bad HELO'), check: 'stub-helo', reason: 'forged' };
  }
  return { action: 'continue' };
}

const BODY = 'Subject: t\r\n\r\nhello\r\n.\r\n';

/** A session with a refusal in its log, every counter above zero, and `slot` in its slot. */
function prepared(slot: 'open' | 'refused-bdat'): MachineDriver {
  const d = new MachineDriver(config(), { policy, commits: 'accept' });
  d.send('EHLO c.example\r\nNOOP\r\nXYZZY\r\n');
  d.send('MAIL FROM:<a@c.example>\r\nRCPT TO:<bad@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
  assert.match(d.send(BODY).join('\n'), /^250 2\.0\.0 Ok: queued/);
  d.send('MAIL FROM:<b@c.example>\r\nRCPT TO:<alice@example.test>\r\n');
  if (slot === 'refused-bdat') {
    // The message grows past the limit in its first chunk: the rest of it would get 552 too.
    assert.deepEqual(d.send(`BDAT 2000\r\n${'x'.repeat(2000)}`), ['552 5.3.4 Message size exceeds fixed maximum message size']);
    assert.equal(d.machine.transaction, null);
  } else assert.ok(d.machine.transaction !== null);
  const s = d.machine.session!;
  for (const [name, n] of Object.entries(s.counters)) assert.ok(n > 0, `counter ${name} is non-zero before the event`);
  assert.ok(s.verdicts.length > 0, 'the verdict log is non-empty before the event');
  assert.ok(s.helo !== null);
  return d;
}

type Snapshot = { helo: SessionSecurity['helo']; tls: SessionSecurity['tls']; auth: SessionSecurity['auth']; counters: SessionSecurity['counters']; verdicts: SessionSecurity['verdicts'] };

function snapshot(d: MachineDriver): Snapshot {
  const s = d.machine.session!;
  return { helo: s.helo, tls: s.tls, auth: s.auth, counters: { ...s.counters }, verdicts: [...s.verdicts] };
}

const EVENTS: Record<ResetEvent, { slot: 'open' | 'refused-bdat'; apply: (d: MachineDriver) => Promise<void> }> = {
  rset: { slot: 'open', apply: async (d) => assert.deepEqual(await d.play('RSET\r\n'), ['250 2.0.0 Reset']) },
  endOfData: { slot: 'open', apply: async (d) => assert.match((await d.play(`DATA\r\n${BODY}`)).join('\n'), /250 2\.0\.0 Ok: queued/) },
  ehlo: { slot: 'open', apply: async (d) => assert.match((await d.play('EHLO other.example\r\n')).join('\n'), /^250-mx\.example\.test/) },
  ehloRefused: { slot: 'open', apply: async (d) => assert.deepEqual(await d.play('EHLO evil.example\r\n'), ['550 5.7.1 Bad HELO']) },
  tlsReady: {
    slot: 'refused-bdat',
    apply: async (d) => {
      assert.deepEqual(await d.play('STARTTLS\r\n'), ['220 2.0.0 Ready to start TLS']);
      d.tlsReady();
    },
  },
};

for (const [event, { slot, apply }] of Object.entries(EVENTS) as [ResetEvent, (typeof EVENTS)[ResetEvent]][]) {
  const rule = RESET_RULES[event];
  test(`reset table: ${event} (transaction ${rule.transaction}, HELO ${rule.helo}, TLS ${rule.tls}, auth ${rule.auth}, counters and verdict log kept)`, async () => {
    const d = prepared(slot);
    const txnBefore = d.machine.transaction;
    const before = snapshot(d);
    await apply(d);
    const after = snapshot(d);

    if (rule.transaction === 'keep') assert.equal(d.machine.transaction, txnBefore, 'transaction kept');
    else assert.equal(d.machine.transaction, null, 'transaction dropped');

    if (rule.helo === 'keep') assert.deepEqual(after.helo, before.helo, 'HELO kept');
    else if (rule.helo === 'clear') assert.equal(after.helo, null, 'HELO cleared');
    else assert.deepEqual(after.helo, { verb: 'EHLO', name: 'other.example' }, 'HELO replaced');

    if (rule.tls === 'keep') assert.deepEqual(after.tls, before.tls, 'TLS kept');
    else assert.equal(after.tls?.protocol, 'TLSv1.3', 'TLS set');

    if (rule.auth === 'keep') assert.deepEqual(after.auth, before.auth, 'auth kept');
    else assert.equal(after.auth, null, 'auth cleared');

    // Counters keep counting; none goes back. The transaction counters do not move at all.
    for (const name of Object.keys(before.counters) as (keyof Snapshot['counters'])[]) {
      assert.ok(after.counters[name] >= before.counters[name], `counter ${name} kept (${before.counters[name]} -> ${after.counters[name]})`);
    }
    assert.equal(after.counters.transactions, before.counters.transactions, 'transaction counter kept');
    assert.equal(after.counters.recipients, before.counters.recipients, 'recipient counter kept');
    // Append-only: what was in the log is still there, in order.
    assert.deepEqual(after.verdicts.slice(0, before.verdicts.length), before.verdicts, 'verdict log kept');

    // What the slot held is really gone: the refused BDAT message's remains get no 552 after TLS.
    if (slot === 'refused-bdat') {
      d.send('EHLO c.example\r\n');
      assert.deepEqual(d.send('BDAT 3 LAST\r\nabc'), ['503 5.5.1 Need MAIL command']);
    }
  });
}

test('reset table: after every event a refusal is still remembered by the real pipeline (the check refuses only once)', async () => {
  for (const event of Object.keys(EVENTS) as ResetEvent[]) {
    let calls = 0;
    const once: Check = {
      name: 'once',
      stages: ['helo', 'rcpt'],
      run: (ctx) => {
        if (ctx.stage === 'helo') return policy({ type: 'policy', stage: 'helo', session: ctx.session, transaction: null, recipient: null, heloName: ctx.heloName, message: null });
        return ctx.recipient?.address === 'bad@example.test' && calls++ === 0 ? { action: 'reject', reply: reply(550, '5.1.1', 'No such user'), check: 'once', reason: 'first call' } : { action: 'continue' };
      },
    };
    const pipeline = new PolicyPipeline([once], { log: pino({ level: 'silent' }), defaultTimeoutMs: 1000 });
    const d = new MachineDriver(config(), { policy: pipeline.run, commits: 'accept' });
    assert.deepEqual((await d.play('EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<bad@example.test>\r\n')).slice(1), ['250 2.1.0 Sender ok', '550 5.1.1 No such user']);
    await d.play('RCPT TO:<alice@example.test>\r\n');
    if (EVENTS[event].slot === 'refused-bdat') await d.play(`BDAT 2000\r\n${'x'.repeat(2000)}`);
    await EVENTS[event].apply(d);
    if (d.machine.session!.helo === null) await d.play('EHLO c.example\r\n');
    if (d.machine.transaction === null) await d.play('MAIL FROM:<c@c.example>\r\n');
    assert.deepEqual(await d.play('RCPT TO:<bad@example.test>\r\n'), ['550 5.1.1 No such user'], event);
    assert.equal(calls, 1, `${event}: answered from the session's verdict log, not by the check`);
  }
});
