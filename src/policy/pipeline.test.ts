// The policy pipeline with the real session machine: order, accept, time budget, a throwing
// check, and verdict memory (RSET and a new transaction cannot launder a refusal).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { defaultConfig } from '../config/types.ts';
import type { PolicyVerdict } from '../protocol/machine.ts';
import { reply, REPLY } from '../protocol/replies.ts';
import { machineConfigFrom } from '../server/machine-config.ts';
import { MachineDriver, policySession, TestClock, type PolicyRequest } from '../../test/helpers/drive.ts';
import type { Check } from './check.ts';
import { PolicyPipeline } from './pipeline.ts';
import { STORE_KINDS, useStores } from '../../test/helpers/stores.ts';

const log = pino({ level: 'silent' });
const GREYLISTED = reply(451, '4.7.1', 'Greylisted, try again later');

async function converse(checks: Check[], input: string, maxRefusals = 3): Promise<string[]> {
  return policySession(new PolicyPipeline(checks, { log, defaultTimeoutMs: 50 }), input, { maxRefusals });
}

function greylistAtData(calls: { n: number }): Check {
  return {
    name: 'greylist',
    stages: ['data'],
    run: () => {
      calls.n++;
      return { action: 'tempfail', reply: GREYLISTED, check: 'greylist', reason: 'new triplet' };
    },
  };
}

test('seed report: a DATA-time greylist tempfail is not laundered by RSET and a new sender', async () => {
  const calls = { n: 0 };
  const r = await converse(
    [greylistAtData(calls)],
    'HELO spam.example\r\nMAIL FROM:<a@spam.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nhi\r\n.\r\n' +
      'RSET\r\nMAIL FROM:<b@other.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nhi again\r\n.\r\nQUIT\r\n',
  );
  assert.deepEqual(r.map((x) => x.slice(0, 9)), ['220 local', '250 local', '250 2.1.0', '250 2.1.5', '354 End d', '451 4.7.1', '250 2.0.0', '250 2.1.0', '250 2.1.5', '354 End d', '451 4.7.1', '221 2.0.0']);
  assert.equal(calls.n, 1, 'the second transaction got the remembered verdict');
});

test('verdict memory at RCPT is per key: another recipient is still checked', async () => {
  const seen: string[] = [];
  const check: Check = {
    name: 'deny-bob',
    stages: ['rcpt'],
    run: (ctx) => {
      seen.push(ctx.recipient!.address);
      return ctx.recipient!.address.startsWith('bob@') ? { action: 'reject', reply: reply(550, '5.1.1', 'No such user'), check: 'deny-bob', reason: 'test' } : { action: 'continue' };
    },
  };
  const r = await converse([check], 'HELO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\nRSET\r\nMAIL FROM:<x@c.example>\r\nRCPT TO:<BOB@example.test>\r\nRCPT TO:<alice@example.test>\r\n');
  assert.deepEqual(r.slice(3).map((x) => x.slice(0, 3)), ['550', '250', '250', '550', '250']);
  assert.deepEqual(seen, ['bob@example.test', 'alice@example.test'], 'bob was not asked again, alice was');
});

test('after max_refusals_per_session refusals the session ends with 421 4.7.0', async () => {
  const check: Check = { name: 'no', stages: ['rcpt'], run: () => ({ action: 'reject', reply: reply(550, '5.7.1', 'No'), check: 'no', reason: 'test' }) };
  const r = await converse([check], 'HELO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nRCPT TO:<d@example.test>\r\n', 3);
  assert.deepEqual(r.slice(3), ['550 5.7.1 No', '550 5.7.1 No', '550 5.7.1 No', '421 4.7.0 Too many refusals in one session, closing connection']);
});

test('order, accept and continue: accept ends the stage; continue means no opinion', async () => {
  const order: string[] = [];
  const mk = (name: string, v: PolicyVerdict): Check => ({ name, stages: ['mail'], run: () => (order.push(name), v) });
  await converse([mk('a', { action: 'continue' }), mk('b', { action: 'accept' }), mk('c', { action: 'reject', reply: reply(550, '5.7.1', 'x'), check: 'c', reason: 'r' })], 'HELO c.example\r\nMAIL FROM:<>\r\n');
  assert.deepEqual(order, ['a', 'b']);
});

test('a slow check gets its timeout verdict; a throwing check a tempfail; the session goes on', async () => {
  const slow: Check = { name: 'slow', stages: ['rcpt'], timeoutMs: 20, run: () => new Promise(() => undefined) };
  const r1 = await converse([slow], 'HELO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nNOOP\r\n');
  assert.deepEqual(r1.slice(3), ['451 4.4.3 Temporary local problem, try again later', '250 2.0.0 Ok']);
  const dnsStyle: Check = { ...slow, name: 'dnsbl', onTimeout: { action: 'continue' } };
  const r2 = await converse([dnsStyle], 'HELO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\n');
  assert.equal(r2.at(-1), '250 2.1.5 Recipient ok', 'a DNS list that does not answer is "no answer"');
  const broken: Check = { name: 'broken', stages: ['rcpt'], run: () => { throw new Error('bug'); } };
  const r3 = await converse([broken], 'HELO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\n');
  assert.equal(r3.at(-1), '451 4.3.0 Temporary local problem, try again later');
});

test('a check configured twice is a configuration error', () => {
  const c: Check = { name: 'x', stages: ['rcpt'], run: () => ({ action: 'continue' }) };
  assert.throws(() => new PolicyPipeline([c, c], { log, defaultTimeoutMs: 10 }), /configured twice/);
});

const openStore = useStores();

for (const kind of STORE_KINDS) {
  test(`${kind}: reconnect variant: a refusal with a TTL is remembered for the client network`, async (t) => {
    const store = await openStore(kind, t);
    let isListed = true;
    const calls = { n: 0 };
    const listCheck: Check = {
      name: 'blocklist',
      stages: ['rcpt'],
      memoryScope: 'network',
      key: () => '',
      run: () => {
        calls.n++;
        return isListed ? { action: 'reject', reply: reply(554, '5.7.1', 'Listed'), check: 'blocklist', reason: 'zen', ttlSeconds: 600 } : { action: 'continue' };
      },
    };
    const pipeline = new PolicyPipeline([listCheck], { log, defaultTimeoutMs: 1000, store });
    const session = (address: string): Promise<string[]> =>
      policySession(pipeline, 'HELO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\n', { address });
    assert.equal((await session('198.51.100.7')).at(-1), '554 5.7.1 Listed');
    isListed = false; // the check would now say nothing: the remembered refusal still applies
    assert.equal((await session('198.51.100.7')).at(-1), '554 5.7.1 Listed', 'reconnecting does not launder it');
    assert.equal((await session('198.51.100.99')).at(-1), '554 5.7.1 Listed', 'nor does another address of the same /24');
    assert.equal((await session('203.0.113.7')).at(-1), '250 2.1.5 Recipient ok', 'another network is checked afresh');
    assert.equal(calls.n, 2);
  });

  test(`${kind}: RCPT-time variant across sessions, with the network prefix configured (/32) and per host`, async (t) => {
    const store = await openStore(kind, t);
    const calls = { n: 0 };
    const deny = (name: string, memoryScope: 'host' | 'network' | undefined): Check => ({
      name,
      stages: ['rcpt'],
      ...(memoryScope !== undefined ? { memoryScope } : {}),
      run: (ctx) => {
        calls.n++;
        return { action: 'tempfail', reply: reply(450, '4.7.1', `${name} says later`), check: name, reason: 'test', key: ctx.recipient!.address, ttlSeconds: 300 };
      },
    });
    const input = 'HELO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.test>\r\nRSET\r\nMAIL FROM:<c@d.example>\r\nRCPT TO:<x@example.test>\r\n';
    const strict = new PolicyPipeline([deny('per-host', 'network')], { log, defaultTimeoutMs: 1000, store, prefixes: { ipv4: 32, ipv6: 128 } });
    assert.deepEqual((await policySession(strict, input, { address: '192.0.2.1' })).filter((r) => r.startsWith('450')).length, 2);
    assert.equal(calls.n, 1, 'RSET and a new sender got the remembered verdict');
    assert.equal((await policySession(strict, input, { address: '192.0.2.1' })).filter((r) => r.startsWith('450')).length, 2);
    assert.equal(calls.n, 1, 'reconnecting got it from the store');
    await policySession(strict, input, { address: '192.0.2.2' });
    assert.equal(calls.n, 2, 'a neighbour is checked afresh with /32');
    const hostScoped = new PolicyPipeline([deny('host-scoped', 'host')], { log, defaultTimeoutMs: 1000, store });
    await policySession(hostScoped, input, { address: '192.0.2.1' });
    await policySession(hostScoped, input, { address: '192.0.2.3' });
    assert.equal(calls.n, 4, 'a host-scoped check (DNS lists) ignores the /24 default');
    const sessionOnly = new PolicyPipeline([deny('session-only', undefined)], { log, defaultTimeoutMs: 1000, store });
    await policySession(sessionOnly, input, { address: '192.0.2.1' });
    await policySession(sessionOnly, input, { address: '192.0.2.1' });
    assert.equal(calls.n, 6, 'a check without a memory scope is not remembered across sessions, TTL or not');
  });

  test(`${kind}: a refusal another node stored is seen here within the recall cache time (5 s)`, async (t) => {
    const store = await openStore(kind, t);
    const clock = { ms: 1_000_000 };
    const calls = { n: 0 };
    const listCheck: Check = {
      name: 'shared',
      stages: ['rcpt'],
      memoryScope: 'host',
      key: () => '',
      run: () => (calls.n++, { action: 'continue' }),
    };
    const pipeline = new PolicyPipeline([listCheck], { log, defaultTimeoutMs: 1000, store, now: () => clock.ms });
    const rcpt = async (): Promise<string | undefined> =>
      (await policySession(pipeline, 'HELO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\n', { address: '198.51.100.7' })).at(-1);
    assert.equal(await rcpt(), '250 2.1.5 Recipient ok');
    // Another node refuses this client and stores it (same key layout as the pipeline's).
    const refusal = { action: 'reject', reply: reply(554, '5.7.1', 'Listed elsewhere'), reason: 'other node' };
    await store.set('v1:verdict:shared:rcpt:198.51.100.7/32:', JSON.stringify(refusal), 600);
    clock.ms += 4_000;
    assert.equal(await rcpt(), '250 2.1.5 Recipient ok', 'within 5 s this process trusts its last read');
    clock.ms += 1_500;
    assert.equal(await rcpt(), '554 5.7.1 Listed elsewhere', 'then it reads the store again');
    assert.equal(calls.n, 2);
  });
}

test('a remembered refusal applies before any check runs: a later accept (allow list) cannot skip it', async () => {
  // The allow list's first lookup "fails" (no opinion); from then on it accepts the client.
  let allowCalls = 0;
  const allowList: Check = { name: 'allow', stages: ['rcpt'], key: () => '', run: () => (allowCalls++ === 0 ? { action: 'continue' } : { action: 'accept' }) };
  const grey: Check = { name: 'grey', stages: ['rcpt'], run: () => ({ action: 'tempfail', reply: GREYLISTED, check: 'grey', reason: 'new' }) };
  const pipeline = new PolicyPipeline([allowList, grey], { log, defaultTimeoutMs: 50 });
  const r = await policySession(
    pipeline,
    'HELO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<x@example.test>\r\nRSET\r\nMAIL FROM:<b@c.example>\r\nRCPT TO:<x@example.test>\r\nRCPT TO:<y@example.test>\r\n',
    { maxRefusals: 5 },
  );
  assert.deepEqual(r.slice(3).filter((x) => !x.startsWith('250 2.0.0') && !x.startsWith('250 2.1.0')), [
    '451 4.7.1 Greylisted, try again later',
    '451 4.7.1 Greylisted, try again later',
    '250 2.1.5 Recipient ok',
  ]);
  assert.equal(allowCalls, 2, 'x@ got the remembered refusal without any check running; y@ was accepted by the allow list');
});

// ---------------------------------------------------------------------------------------------
// The synchronous path: a stage whose checks all answer at once is a value, not a promise, so the
// connection feeds it back with no promise and no timer; a check that goes async still runs within
// its budget.

/** The mail and rcpt requests the machine makes for one transaction (answered "continue" meanwhile). */
function requests(): { mail: PolicyRequest; rcpt: PolicyRequest } {
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  const seen: PolicyRequest[] = [];
  const d = new MachineDriver(machineConfigFrom(cfg, { isTlsAvailable: false, policyStages: new Set(['mail', 'rcpt']) }), {
    clock: new TestClock(),
    policy: (r) => (seen.push(r), { action: 'continue' }),
  });
  d.send('HELO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\n');
  return { mail: seen.find((r) => r.stage === 'mail')!, rcpt: seen.find((r) => r.stage === 'rcpt')! };
}

const sync = (name: string, verdict: PolicyVerdict, calls: string[] = []): Check => ({ name, stages: ['rcpt'], run: () => (calls.push(name), verdict) });

test('a stage whose checks all answer synchronously yields a value, not a promise (continue, accept, refusal, a throw)', () => {
  const { rcpt } = requests();
  const calls: string[] = [];
  const header = 'X-Test: one';
  const passing = new PolicyPipeline([sync('a', { action: 'continue', headers: [header] }, calls), sync('b', { action: 'continue' }, calls)], { log, defaultTimeoutMs: 50 });
  const passed = passing.run(rcpt);
  assert.ok(!(passed instanceof Promise), 'continue from every check: a plain value');
  assert.deepEqual(passed, { action: 'continue', headers: [header] });
  assert.deepEqual(calls, ['a', 'b']);
  const accepting = new PolicyPipeline([sync('allow', { action: 'accept' }), sync('never', { action: 'reject', reply: reply(550, '5.7.1', 'x'), check: 'never', reason: 'r' })], { log, defaultTimeoutMs: 50 });
  assert.deepEqual(accepting.run(rcpt), { action: 'accept' });
  const refusing = new PolicyPipeline([sync('deny', { action: 'reject', reply: reply(550, '5.7.1', 'No'), check: 'deny', reason: 'listed' })], { log, defaultTimeoutMs: 50 });
  const refused = refusing.run(rcpt);
  assert.ok(!(refused instanceof Promise));
  assert.deepEqual(refused, { action: 'reject', reply: reply(550, '5.7.1', 'No'), check: 'deny', reason: 'listed', key: 'alice@example.test' });
  const broken = new PolicyPipeline([{ name: 'broken', stages: ['rcpt'], run: () => { throw new Error('bug'); } }], { log, defaultTimeoutMs: 50 });
  const threw = broken.run(rcpt);
  assert.ok(!(threw instanceof Promise), 'a check that throws is a tempfail, synchronously');
  assert.equal(threw.action, 'tempfail');
});

test('a mixed stage: a synchronous check, one that never answers and a third: a promise that times out with the slow check\'s verdict', async () => {
  const { rcpt } = requests();
  const calls: string[] = [];
  let slowSignal: AbortSignal | null = null;
  const slow: Check = { name: 'slow', stages: ['rcpt'], timeoutMs: 30, run: (_ctx, signal) => ((slowSignal = signal), calls.push('slow'), new Promise(() => undefined)) };
  const pipeline = new PolicyPipeline([sync('first', { action: 'continue', headers: ['X-First: 1'] }, calls), slow, sync('third', { action: 'continue' }, calls)], { log, defaultTimeoutMs: 5_000 });
  const startedMs = Date.now();
  const answer = pipeline.run(rcpt);
  assert.ok(answer instanceof Promise, 'a check that goes async makes the stage a promise');
  assert.deepEqual(await answer, { action: 'tempfail', reply: REPLY.policyTimedOut, check: 'slow', reason: 'timed out after 30 ms', key: 'alice@example.test' });
  assert.ok(Date.now() - startedMs >= 25, 'bounded by the slow check\'s own budget');
  assert.deepEqual(calls, ['first', 'slow'], 'the stage ends at the timeout verdict; the third never ran');
  assert.equal((slowSignal as AbortSignal | null)?.aborted, true, 'the slow check saw its signal abort');
  // A timeout verdict that says "no opinion" (a DNS list): the rest of the stage runs after it.
  const lenient = new PolicyPipeline([sync('first', { action: 'continue', headers: ['X-First: 1'] }), { ...slow, onTimeout: { action: 'continue' } }, sync('third', { action: 'continue', headers: ['X-Third: 3'] })], { log, defaultTimeoutMs: 5_000 });
  assert.deepEqual(await lenient.run(rcpt), { action: 'continue', headers: ['X-First: 1', 'X-Third: 3'] });
});

test('a check that answers synchronously never gets a signal that an earlier timeout aborted', async () => {
  const { rcpt } = requests();
  const seen: boolean[] = [];
  const watcher: Check = { name: 'watcher', stages: ['rcpt'], run: (_ctx, signal) => (seen.push(signal.aborted), { action: 'continue' }) };
  const slow: Check = { name: 'slow', stages: ['rcpt'], timeoutMs: 10, onTimeout: { action: 'continue' }, run: () => new Promise(() => undefined) };
  const pipeline = new PolicyPipeline([watcher, slow], { log, defaultTimeoutMs: 5_000 });
  for (let i = 0; i < 3; i++) await pipeline.run(rcpt);
  assert.deepEqual(seen, [false, false, false]);
});

for (const kind of STORE_KINDS) {
  test(`${kind}: a check with a memory scope: the first stage reads the store (a promise), the next within the recall time is a value`, async (t) => {
    const store = await openStore(kind, t);
    const { rcpt } = requests();
    const listCheck: Check = { name: 'list', stages: ['rcpt'], memoryScope: 'host', key: () => '', run: () => ({ action: 'continue' }) };
    const pipeline = new PolicyPipeline([listCheck], { log, defaultTimeoutMs: 1000, store });
    const first = pipeline.run(rcpt);
    assert.ok(first instanceof Promise, 'nothing recalled yet: one store read');
    assert.deepEqual(await first, { action: 'continue' });
    const second = pipeline.run(rcpt);
    assert.ok(!(second instanceof Promise), 'recalled: no store read, no promise');
    assert.deepEqual(second, { action: 'continue' });
    // A refusal with a TTL is stored (async), then recalled synchronously, with the check's key.
    const denyCheck: Check = { name: 'deny', stages: ['rcpt'], memoryScope: 'host', key: () => '', run: () => ({ action: 'reject', reply: reply(554, '5.7.1', 'Listed'), check: 'deny', reason: 'zen', ttlSeconds: 600 }) };
    const denying = new PolicyPipeline([denyCheck], { log, defaultTimeoutMs: 1000, store });
    assert.equal((await denying.run(rcpt)).action, 'reject');
    const stored = JSON.parse((await store.get('v1:verdict:deny:rcpt:192.0.2.1/32:'))!) as { at: number };
    assert.equal(typeof stored.at, 'number', 'stored with when it was refused (portcullis verdicts list)');
    assert.deepEqual(stored, { action: 'reject', reply: reply(554, '5.7.1', 'Listed'), reason: 'zen', at: stored.at });
    const recalled = denying.run(rcpt);
    assert.ok(!(recalled instanceof Promise));
    assert.deepEqual(recalled, { action: 'reject', reply: reply(554, '5.7.1', 'Listed'), check: 'deny', reason: 'remembered for the client network: zen', key: '' });
  });
}

test('sessionClosed reaches every check that holds per-session state; one that throws is logged, the rest still run', () => {
  const closed: string[] = [];
  const quiet: Check = { name: 'quiet', stages: ['mail'], run: () => ({ action: 'continue' }) };
  const thrower: Check = { name: 'thrower', stages: ['mail'], run: () => ({ action: 'continue' }), sessionClosed: () => { throw new Error('bug'); } };
  const holder: Check = { name: 'holder', stages: ['rcpt'], run: () => ({ action: 'continue' }), sessionClosed: (id) => void closed.push(id) };
  const pipeline = new PolicyPipeline([quiet, thrower, holder], { log, defaultTimeoutMs: 1000 });
  pipeline.sessionClosed('S1');
  assert.deepEqual(closed, ['S1']);
});
