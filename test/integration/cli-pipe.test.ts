// A CLI command whose output is closed early (`portcullis spool list | head -1`) ends quietly, as
// Unix tools do: no EPIPE stack trace, exit status 0. Driven through a real pipe to a real `head`.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { JournalSpool } from '../../src/spool/journal.ts';
import { CLI_MAIN, REPO_ROOT } from '../helpers/cli-server.ts';
import { bodyFor, makeEnvelope } from '../helpers/spool-crash-child.ts';

/** More lines than a pipe buffers (64 KiB), so the writer is still writing when head exits. */
const MESSAGES = 3000;

test('spool list | head -1: the first line, then a quiet exit 0 (no EPIPE trace)', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-pipe-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const spoolDir = path.join(dir, 'spool');
  const spool = await JournalSpool.open({ dir: spoolDir, journalMaxMessageBytes: 65_536, segmentMaxBytes: 64 * 1024 * 1024, writerId: 'test' });
  await Promise.all(Array.from({ length: MESSAGES }, (_, i) => spool.commitEnvelope(makeEnvelope(`Q${i}`, 40), bodyFor(`Q${i}`, 40))));
  await spool.close();
  const configPath = path.join(dir, 'portcullis.toml');
  writeFileSync(configPath, `[spool]\ndir = ${JSON.stringify(spoolDir)}\n`);

  // The shell reports the CLI's own status (PIPESTATUS[0]) after head has taken its one line.
  const script = `"$0" "$1" spool list --config "$2" 2>"$3" | head -1; echo "status=\${PIPESTATUS[0]}"`;
  const stderrFile = path.join(dir, 'stderr');
  const child = spawn('bash', ['-c', script, process.execPath, CLI_MAIN, configPath, stderrFile], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, NODE_OPTIONS: '' } });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearTimeout(timer);
  assert.equal(code, 0);
  const lines = out.trim().split('\n');
  assert.equal(lines.length, 2, out);
  assert.match(lines[0], /^Q\d+ \S+ <.*> <.*> \d+$/);
  const stderr = (await import('node:fs')).readFileSync(stderrFile, 'utf8');
  assert.equal(stderr, '', 'nothing on stderr');
  assert.equal(lines[1], 'status=0');
});
