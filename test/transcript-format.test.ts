// The transcript format's @verdict and @now lines: what they parse to, what they refuse, and
// what the stub checks answer (the semantics documented in helpers/transcript.ts).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultConfig } from '../src/config/types.ts';
import { machineConfigFrom } from '../src/server/machine-config.ts';
import { MachineDriver, TestClock, type PolicyRequest } from './helpers/drive.ts';
import { parseTranscript, TranscriptPolicy } from './helpers/transcript.ts';

test('@verdict: check, optional stage, action, count and reply; the stub checks and their stages', () => {
  const t = parseTranscript('t', '@verdict greylist@data=tempfail\n@verdict dnsbl=reject*2 554 5.7.1 Listed\n@verdict greylist@rcpt=continue\n');
  assert.deepEqual(t.checks, [
    { name: 'greylist', stages: ['data', 'rcpt'] },
    { name: 'dnsbl', stages: ['connect', 'helo', 'mail', 'rcpt', 'data'] },
  ]);
  assert.deepEqual(t.steps[0], { kind: 'verdict', check: 'greylist', stage: 'data', action: 'tempfail', count: 1, reply: null });
  assert.deepEqual(t.steps[1], { kind: 'verdict', check: 'dnsbl', stage: null, action: 'reject', count: 2, reply: { code: 554, enhanced: '5.7.1', lines: ['Listed'] } });
});

test('@now: +N with ms, s, m or h', () => {
  const t = parseTranscript('t', '@now +300s\n@now +250ms\n@now +5m\n@now +1h\n');
  assert.deepEqual(t.steps.map((s) => (s.kind === 'now' ? s.advanceMs : -1)), [300_000, 250, 300_000, 3_600_000]);
});

test('@verdict and @now lines that do not parse are errors, with the line number', () => {
  for (const bad of ['@verdict greylist@nowhere=tempfail', '@verdict greylist=maybe', '@verdict greylist', '@verdict =reject', '@verdict g=reject 55 5.7.1 x', '@now 300', '@now +300', '@now -5s']) {
    assert.throws(() => parseTranscript('t', `# x\n${bad}\n`), /t:2: /, bad);
  }
});

test('the stub answers its action on its next N calls at that stage, then continue; the stage line is used before the any-stage line', async () => {
  const t = parseTranscript('t', '@verdict grey@rcpt=tempfail*2\n@verdict grey@mail=continue\n@verdict grey=reject\n');
  const clock = new TestClock();
  const policy = new TranscriptPolicy(t, clock.now);
  const pipeline = policy.pipeline!;
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  const requests: PolicyRequest[] = [];
  const d = new MachineDriver(machineConfigFrom(cfg, { isTlsAvailable: false, policyStages: new Set(['rcpt', 'mail']) }), {
    clock,
    policy: (r) => (requests.push(r), { action: 'continue' }),
  });
  d.send('HELO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<alice@example.test>\r\n');
  const [mail, rcpt] = requests.filter((r) => r.stage === 'mail' || r.stage === 'rcpt');
  assert.equal(mail.stage, 'mail');
  assert.equal(rcpt.stage, 'rcpt');
  // Nothing applied yet: continue everywhere.
  assert.equal((await pipeline.run(rcpt)).action, 'continue');
  for (const s of t.steps) if (s.kind === 'verdict') policy.apply(s);
  assert.deepEqual(t.checks, [{ name: 'grey', stages: ['rcpt', 'mail'] }]);
  // At MAIL its own line comes first, then the any-stage line (with the default reply).
  assert.equal((await pipeline.run(mail)).action, 'continue');
  const refused = await pipeline.run(mail);
  assert.equal(refused.action, 'reject');
  assert.deepEqual(refused.action === 'reject' ? refused.reply : null, { code: 550, enhanced: '5.7.1', lines: ['Refused by policy'] });
  assert.equal((await pipeline.run(mail)).action, 'continue');
  const answers = [];
  for (let i = 0; i < 3; i++) answers.push((await pipeline.run(rcpt)).action);
  assert.deepEqual(answers, ['tempfail', 'tempfail', 'continue']);
});

test('a transcript without @verdict lines runs with no pipeline (the machine asks no policy)', () => {
  assert.equal(new TranscriptPolicy(parseTranscript('t', 'S: 220 *\n'), () => 0).pipeline, null);
});
