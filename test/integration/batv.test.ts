// BATV over a real socket, configured the way an operator does it: a TOML file with a [batv]
// section and a key file beside it (the path resolved against the working directory), the
// pipeline built by buildPipeline. A bounce to a tag signed with that key is accepted; a forged
// bounce to the plain address and one to a tampered tag are refused 550 5.7.1; refusals are
// counted per check, and a later transaction with a real sender to the same address is not refused
// by verdict memory (the refusal is about the bounce). Configuration mistakes are reported precisely.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { ConfigError, loadConfig, parseConfig } from '../../src/config/load.ts';
import { batvPolicy, BatvKeyError, loadBatvKeys, signReversePath } from '../../src/delivery/batv.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { startTestServer } from '../helpers/server.ts';
import { runSocket } from '../helpers/socket-runner.ts';
import { parseTranscript } from '../helpers/transcript.ts';

const NOW = Date.UTC(2026, 11, 1, 12, 0, 0);

const CONFIG = `
[domains]
local = ["example.test"]
[batv]
domains = ["example.test"]
keys = [{ id = 2, secret_file = "keys/new.key" }, { id = 1, secret_file = "keys/old.key" }]
max_age = "7d"
exceptions = ["lists@example.test"]
`;

test('batv over a socket: a signed bounce is accepted, forged ones refused 550 5.7.1 and counted', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-batv-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'portcullis.toml'), CONFIG);
  mkdirSync(path.join(dir, 'keys'));
  writeFileSync(path.join(dir, 'keys', 'new.key'), 'c2VjcmV0LW51bWJlci10d28tZm9yLXRoZS10ZXN0\n');
  writeFileSync(path.join(dir, 'keys', 'old.key'), 'the-old-secret-still-verifies\n');
  const cfg = loadConfig('portcullis.toml', { cwd: dir });
  assert.deepEqual(cfg.batv.keys.map((k) => k.secretFile), [path.join(dir, 'keys/new.key'), path.join(dir, 'keys/old.key')], 'key paths pinned to the working directory');

  const policy = batvPolicy(cfg.batv, loadBatvKeys(cfg.batv.keys));
  const signed = signReversePath('alice@example.test', policy, NOW - 86_400_000);
  assert.match(signed, /^prvs=2\d{3}[0-9a-f]{6}=alice@example\.test$/, 'the first key signs');
  const oldKey = batvPolicy(cfg.batv, loadBatvKeys([cfg.batv.keys[1]]));
  const signedByOld = signReversePath('bob@example.test', oldKey, NOW);
  const tampered = signed.replace(/=alice@/, '=mallory@');

  const counted: string[] = [];
  const pipeline = buildPipeline(cfg, pino({ level: 'silent' }), null, { now: () => NOW, onVerdict: (check, stage, action) => void counted.push(`${check}@${stage}=${action}`) });
  assert.ok(pipeline !== null);
  const transcript = parseTranscript('batv', `
S: 220 *
C: HELO mx.bouncer.example
S: 250 *
C: MAIL FROM:<>
S: 250 2.1.0 Sender ok
C: RCPT TO:<${signed}>
S: 250 2.1.5 Recipient ok
C: RCPT TO:<${signedByOld}>
S: 250 2.1.5 Recipient ok
C: RCPT TO:<lists@example.test>
S: 250 2.1.5 Recipient ok
C: RCPT TO:<alice@example.test>
S: 550 5.7.1 Bounce rejected: not sent to a valid return address of this domain
C: RCPT TO:<${tampered}>
S: 550 5.7.1 Bounce rejected: not sent to a valid return address of this domain
C: DATA
S: 354 *
C: From: MAILER-DAEMON@mx.bouncer.example
C: Subject: Undelivered Mail Returned to Sender
C:
C: bounce
C: .
S: 250 2.0.0 Ok: queued as *
C: MAIL FROM:<someone@sender.example>
S: 250 2.1.0 Sender ok
C: RCPT TO:<alice@example.test>
S: 250 2.1.5 Recipient ok
C: QUIT
S: 221 *
@closed
`);
  const server = await startTestServer(cfg, { policy: pipeline });
  t.after(() => server.stop());
  await runSocket(transcript, server.port, server.spoolDir);
  assert.deepEqual(counted.filter((c) => c.startsWith('batv')).filter((c) => c.endsWith('reject')), ['batv@rcpt=reject', 'batv@rcpt=reject']);
});

test('batv configuration: each mistake named with its key', () => {
  const problems = (text: string): string[] => {
    try {
      parseConfig(text, 'b.toml');
      return [];
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.problems;
    }
  };
  assert.deepEqual(problems('[domains]\nlocal = ["example.test"]\n[batv]\ndomains = ["example.test"]\n'), [
    'batv.domains = ["example.test"]: batv.keys must name at least one key (e.g. keys = [{ id = 0, secret_file = "batv.key" }])',
  ]);
  assert.deepEqual(problems('[batv]\ndomains = ["other.test"]\nkeys = [{ id = 0, secret_file = "k" }]\n'), [
    'batv.domains = ["other.test"]: "other.test" is not in domains.local, so its bounces would never be accepted here',
  ]);
  assert.deepEqual(problems('[batv]\nkeys = [{ id = 10, secret_file = "" }, { id = 1, secret = "x" }, { id = 3, secret_file = "a" }, { id = 3, secret_file = "b" }, "k"]\n'), [
    'batv.keys[0].id = 10: must be an integer from 0 to 9 (the tag\'s one-digit key number)',
    'batv.keys[0].secret_file = "": must be a non-empty string (a path)',
    'batv.keys[1].secret: unknown key (a BATV key has "id" and "secret_file")',
    'batv.keys[1]: "secret_file" is missing (a file holding the secret, at least 16 bytes)',
    'batv.keys[3].id = 3: used twice; each key needs its own number',
    'batv.keys[4] = "k": must be a table such as { id = 0, secret_file = "batv.key" }, not a string',
  ]);
  assert.deepEqual(problems('[batv]\nmax_age = 7\n'), ['batv.max_age = 7: must be a duration string such as "7d", not an integer (write "7d")']);
  assert.deepEqual(problems('[batv]\nmax_age = "12h"\n'), ['batv.max_age = "12h": must be a whole number of days, e.g. "7d"']);
  assert.deepEqual(problems('[batv]\nmax_age = "400d"\n'), ['batv.max_age = "400d": must be at most 365d']);
  assert.deepEqual(problems('[batv]\nexceptions = ["<a@b.test>", "nobody"]\n'), [
    'batv.exceptions[0] = "<a@b.test>": must be a full address such as "lists@example.com" (no angle brackets or spaces)',
    'batv.exceptions[1] = "nobody": must be a full address such as "lists@example.com" (no angle brackets or spaces)',
  ]);
  assert.deepEqual(problems('[batv]\naction = "drop"\n'), ['batv.action = "drop": must be one of "reject", "tag", "accept"']);
  assert.deepEqual(problems('[domains]\nlocal = ["example.test"]\n[policy]\nchecks = ["spf"]\n[batv]\ndomains = ["example.test"]\nkeys = [{ id = 0, secret_file = "k" }]\n'), [
    'policy.checks = ["spf"]: batv.domains is set, so list "batv" too (or turn it off)',
  ]);
});

test('batv: a key file that is missing or too short stops the build with the key named', () => {
  const cfg = parseConfig('[domains]\nlocal = ["example.test"]\n[batv]\ndomains = ["example.test"]\nkeys = [{ id = 4, secret_file = "/nonexistent/batv.key" }]\n', 'b.toml');
  assert.throws(() => buildPipeline(cfg, pino({ level: 'silent' })), (e: unknown) => e instanceof BatvKeyError && /key 4: cannot read "\/nonexistent\/batv\.key"/.test(e.message));
});
