// The portcullis command's own behaviour: help, check-config exit codes and messages, usage errors.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { CLI_MAIN, REPO_ROOT } from '../helpers/cli-server.ts';

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI_MAIN, ...args], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('--help lists every command', () => {
  const r = cli(['--help']);
  assert.equal(r.code, 0);
  for (const c of ['serve', 'check-config', 'spool list', 'spool show']) assert.ok(r.stdout.includes(`portcullis ${c}`), c);
});

test('check-config: the embedded default and the sample config are valid', () => {
  assert.match(cli(['check-config']).stdout, /^configuration OK \(embedded default\)$/m);
  const r = cli(['check-config', '--config', 'examples/portcullis.toml']);
  assert.equal(r.code, 0, r.stderr);
});

test('check-config: exit 1 and one precise line per problem', (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'bad.toml');
  writeFileSync(file, '[smtp]\nlistne = ["127.0.0.1:25"]\nmax_recipients = 5\nvrfy = "yes"\n');
  const r = cli(['check-config', '--config', file]);
  assert.equal(r.code, 1);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 3, r.stderr);
  assert.match(r.stderr, /unknown key "smtp\.listne" \(did you mean "smtp\.listen"\?\)/);
  assert.match(r.stderr, /smtp\.max_recipients = 5: .*100/);
  assert.match(r.stderr, /smtp\.vrfy = "yes"/);
});

test('check-config: a size the spool cannot store or read back is refused, with the reason', (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'big.toml');
  writeFileSync(file, '[smtp]\nmax_message_bytes = 2147483648\n[spool]\nsegment_max_bytes = 4294967296\n');
  const r = cli(['check-config', '--config', file]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /smtp\.max_message_bytes = 2147483648: must be an integer <= 1072693248 \(1023 MiB\): the largest message the spool stores/);
  assert.match(r.stderr, /spool\.segment_max_bytes = 4294967296: must be an integer <= 1073741824 \(1 GiB\): the largest segment the spool reader reads back/);
});

test('usage errors exit 2 with a pointer to --help', () => {
  const r = cli(['frobnicate']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown command frobnicate \(see portcullis --help\)/);
  assert.equal(cli(['serve', '--bogus']).code, 2);
});
