// Greylisting through the real machine and pipeline with each real state store (sqlite and a
// real redis-server: the same suite runs against both) and an injected clock: new triplets wait, retries from a new connection pass after the delay, a
// retry in the same session after RSET never passes, and networks are auto-allowed.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { policySession } from '../../../../test/helpers/drive.ts';
import { STORE_KINDS, useStores, type StoreKind } from '../../../../test/helpers/stores.ts';
import { PolicyPipeline } from '../../pipeline.ts';
import { StoreError, type StateStore } from '../../../store/store.ts';
import { GREYLIST_DEFAULTS, greylistCheck } from './check.ts';

const openStore = useStores();

async function setup(kind: StoreKind, t: { after: (fn: () => Promise<void>) => void }, stage: 'rcpt' | 'data' = 'rcpt') {
  const clock = { ms: Date.UTC(2026, 10, 23, 12, 0, 0) };
  const store = await openStore(kind, t, () => clock.ms);
  const check = greylistCheck({ store, stage, ...GREYLIST_DEFAULTS, now: () => clock.ms });
  const pipeline = new PolicyPipeline([check], { log: pino({ level: 'silent' }), defaultTimeoutMs: 1000, store });
  /** One session from `address`; returns the replies after the greeting and HELO. */
  const session = async (address: string, input: string): Promise<string[]> =>
    (await policySession(pipeline, `HELO c.example\r\n${input}`, { address, maxRefusals: 10, nowMs: () => clock.ms })).slice(2);
  return { clock, session };
}

const TX = 'MAIL FROM:<news@sender.example>\r\nRCPT TO:<alice@example.test>\r\n';

for (const kind of STORE_KINDS) {
  test(`${kind}: greylist: a new triplet waits; a retry from a new connection after the delay passes`, async (t) => {
    const { clock, session } = await setup(kind, t);
    assert.deepEqual(await session('198.51.100.7', TX), ['250 2.1.0 Sender ok', '451 4.7.1 Greylisted, please try again later']);
    clock.ms += 100_000;
    assert.equal((await session('198.51.100.7', TX)).at(-1), '451 4.7.1 Greylisted, please try again later', 'too early');
    clock.ms += 250_000;
    assert.equal((await session('198.51.100.9', TX)).at(-1), '250 2.1.5 Recipient ok', 'same /24, after the delay');
    assert.equal((await session('198.51.100.7', TX)).at(-1), '250 2.1.5 Recipient ok', 'stays passed');
  });

  test(`${kind}: greylist: in the same session, RSET and a retry never pass, whatever time has passed`, async (t) => {
    const { session } = await setup(kind, t);
    // The clock cannot move inside one `session` call, so model "later" by many transactions:
    // verdict memory answers without asking the store at all.
    const r = await session('198.51.100.7', `${TX}RSET\r\nMAIL FROM:<other@else.example>\r\nRCPT TO:<alice@example.test>\r\nRSET\r\n${TX}`);
    assert.deepEqual(r.filter((x) => x.startsWith('4')), Array(3).fill('451 4.7.1 Greylisted, please try again later'));
  });

  test(`${kind}: greylist at the data stage (the seed report): the second transaction after RSET is refused`, async (t) => {
    const { session } = await setup(kind, t, 'data');
    const data = 'DATA\r\nhi\r\n.\r\n';
    const r = await session('198.51.100.7', `${TX}${data}RSET\r\nMAIL FROM:<b@other.example>\r\nRCPT TO:<alice@example.test>\r\n${data}`);
    assert.deepEqual(r.filter((x) => x.startsWith('451')).length, 2);
    assert.ok(!r.some((x) => x.includes('queued')));
  });

  test(`${kind}: greylist: a network is auto-allowed after 5 passed retries`, async (t) => {
    const { clock, session } = await setup(kind, t);
    for (let i = 0; i < 5; i++) await session('203.0.113.5', `MAIL FROM:<s${i}@sender.example>\r\nRCPT TO:<alice@example.test>\r\n`);
    clock.ms += 400_000;
    for (let i = 0; i < 5; i++) {
      assert.equal((await session('203.0.113.5', `MAIL FROM:<s${i}@sender.example>\r\nRCPT TO:<alice@example.test>\r\n`)).at(-1), '250 2.1.5 Recipient ok');
    }
    assert.equal((await session('203.0.113.77', 'MAIL FROM:<brand-new@x.example>\r\nRCPT TO:<bob@example.test>\r\n')).at(-1), '250 2.1.5 Recipient ok');
    assert.equal((await session('192.0.2.1', 'MAIL FROM:<brand-new@x.example>\r\nRCPT TO:<bob@example.test>\r\n')).at(-1), '451 4.7.1 Greylisted, please try again later', 'other networks are not');
  });

  test(`${kind}: greylist: a passed triplet and an auto-allowed network are not read from the store again for a while`, async (t) => {
    const clock = { ms: Date.UTC(2026, 10, 23, 12, 0, 0) };
    const real = await openStore(kind, t, () => clock.ms);
    let reads = 0;
    const store: StateStore = { ...real, get: (key) => (reads++, real.get(key)), set: real.set.bind(real), increment: real.increment.bind(real), setIfAbsent: real.setIfAbsent.bind(real), delete: real.delete.bind(real), purgeExpired: real.purgeExpired.bind(real), close: async () => undefined };
    const check = greylistCheck({ store, stage: 'rcpt', ...GREYLIST_DEFAULTS, now: () => clock.ms });
    const pipeline = new PolicyPipeline([check], { log: pino({ level: 'silent' }), defaultTimeoutMs: 1000, store });
    const session = async (address: string): Promise<string | undefined> =>
      (await policySession(pipeline, `HELO c.example\r\n${TX}`, { address, maxRefusals: 10, nowMs: () => clock.ms })).at(-1);
    assert.match((await session('198.51.100.7'))!, /^451/);
    clock.ms += 400_000;
    assert.match((await session('198.51.100.7'))!, /^250/);
    reads = 0;
    assert.match((await session('198.51.100.7'))!, /^250/);
    assert.equal(reads, 0, 'the passed triplet came from memory');
    clock.ms += 11 * 60_000;
    assert.match((await session('198.51.100.7'))!, /^250/);
    assert.ok(reads > 0, 'after ten minutes the store is asked again');
  });
}

test('greylist: a state store that is down gives a typed 451 4.3.0, not a thrown error', async () => {
  const down: StateStore = {
    get: () => Promise.reject(new StoreError('connection refused')),
    set: () => Promise.reject(new StoreError('connection refused')),
    delete: () => Promise.reject(new StoreError('connection refused')),
    increment: () => Promise.reject(new StoreError('connection refused')),
    setIfAbsent: () => Promise.reject(new StoreError('connection refused')),
    scan: () => Promise.reject(new StoreError('connection refused')),
    purgeExpired: () => Promise.resolve(0),
    close: () => Promise.resolve(),
  };
  const check = greylistCheck({ store: down, stage: 'rcpt', ...GREYLIST_DEFAULTS, now: Date.now });
  const lines: string[] = [];
  const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
  const pipeline = new PolicyPipeline([check], { log, defaultTimeoutMs: 1000 });
  const r = await policySession(pipeline, `HELO c.example\r\n${TX}`, { address: '198.51.100.7' });
  assert.equal(r.at(-1), '451 4.3.0 Temporary local problem, try again later');
  assert.ok(!lines.some((l) => l.includes('policy check threw')), 'not logged as our bug');
});
