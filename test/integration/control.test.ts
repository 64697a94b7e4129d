// The control socket from outside: `portcullis stop` stops a running server gracefully, a second
// server on the same spool refuses to start (the socket is the spool's lock), a socket left by a
// killed server does not block the next start, and `stop` with no server says so. Real processes.

import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCli, startCliServer } from '../helpers/cli-server.ts';
import { freePort } from '../helpers/ports.ts';

test('`portcullis stop` stops the primary and its workers and removes the control socket', { timeout: 60_000 }, async (t) => {
  const server = await startCliServer({ workers: 2 });
  t.after(() => server.cleanup());
  const sock = path.join(server.spoolDir, 'control.sock');
  assert.ok(existsSync(sock), 'the control socket exists while the server runs');
  const r = await runCli(server.configPath, ['stop'], 40_000);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), new RegExp(`^stopped \\(pid ${server.pid}\\)\\n$`));
  const exit = await server.exited;
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.match(server.logText(), /"msg":"stop requested on the control socket"/);
  assert.match(server.logText(), /"msg":"all workers stopped"/);
  assert.equal(existsSync(sock), false, 'the control socket is removed');
});

test('a second server on the same spool refuses to start; after kill -9 the next start replaces the socket', { timeout: 60_000 }, async (t) => {
  const first = await startCliServer({ workers: 1 });
  t.after(() => first.cleanup());
  // Same spool, another port: must refuse before it listens.
  const otherPort = await freePort();
  const otherConfig = path.join(first.dir, 'second.toml');
  writeFileSync(otherConfig, `[smtp]\nlisten = ["127.0.0.1:${otherPort}"]\nworkers = 1\n[spool]\ndir = ${JSON.stringify(first.spoolDir)}\n`);
  const second = await runCli(otherConfig, ['serve'], 20_000);
  assert.equal(second.code, 1);
  assert.match(second.stdout.toString() + second.stderr, /another Portcullis server is running on the spool/);
  assert.ok(existsSync(path.join(first.spoolDir, 'control.sock')), 'the refused start left the running server\'s socket alone');

  await first.stop('SIGKILL');
  assert.ok(existsSync(path.join(first.spoolDir, 'control.sock')), 'kill -9 leaves the socket file behind');
  const again = await first.restart();
  t.after(() => again.cleanup());
  const r = await runCli(again.configPath, ['stop'], 40_000);
  assert.equal(r.code, 0, r.stderr);
});

test('`portcullis stop` with no server running exits 1 and says so', { timeout: 30_000 }, async (t) => {
  const server = await startCliServer({ workers: 1 });
  t.after(() => server.cleanup());
  await server.stop();
  const r = await runCli(server.configPath, ['stop'], 20_000);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no server is running on the spool/);
});
