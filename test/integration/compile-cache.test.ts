// bin/portcullis.js turns on Node's compile cache in a directory only we can write: created
// 0700 and filled by a run; a directory others can write is refused with a warning (and the
// command still works); PORTCULLIS_COMPILE_CACHE=off leaves it off.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/portcullis.js', import.meta.url));

function run(env: NodeJS.ProcessEnv): { status: number | null; stdout: string; stderr: string } {
  const base = { ...process.env };
  delete base.NODE_DISABLE_COMPILE_CACHE;
  delete base.NODE_COMPILE_CACHE;
  const r = spawnSync(process.execPath, [BIN, '--version'], { env: { ...base, ...env }, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function filesUnder(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? filesUnder(path.join(dir, e.name)) : 1;
  return n;
}

test('the compile cache: a private directory, filled by a run; a shared one refused; off is off', (t) => {
  const base = mkdtempSync(path.join(tmpdir(), 'portcullis-cc-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));

  const own = path.join(base, 'xdg');
  const first = run({ XDG_CACHE_HOME: own, PORTCULLIS_COMPILE_CACHE: '' });
  assert.equal(first.status, 0, first.stderr);
  const dir = path.join(own, 'portcullis', 'compile');
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  assert.ok(filesUnder(dir) > 0, 'the run wrote its compiled modules');
  assert.equal(first.stderr, '');
  const second = run({ XDG_CACHE_HOME: own, PORTCULLIS_COMPILE_CACHE: '' });
  assert.equal(second.status, 0, second.stderr);
  assert.equal(second.stdout, first.stdout, 'a warm cache runs the same code');

  const shared = path.join(base, 'shared');
  mkdirSync(shared);
  chmodSync(shared, 0o777);
  const refused = run({ PORTCULLIS_COMPILE_CACHE: shared });
  assert.equal(refused.status, 0, refused.stderr);
  assert.match(refused.stderr, /compile cache .* is not a directory only we can write; running without it/);
  assert.equal(filesUnder(shared), 0, 'nothing written to a directory others can write');

  const offHome = path.join(base, 'off');
  const off = run({ XDG_CACHE_HOME: offHome, PORTCULLIS_COMPILE_CACHE: 'off' });
  assert.equal(off.status, 0, off.stderr);
  assert.equal(existsSync(offHome), false);
});
