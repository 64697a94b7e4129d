// The log format of the real server: JSON lines when standard output is a file (the default,
// "auto"), one human line per event with log.format = "pretty" or on a terminal ("auto" under a
// real pseudo-terminal, made by script(1)), from the primary and two workers writing at once.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI_MAIN, REPO_ROOT, startCliServer } from '../helpers/cli-server.ts';
import { ownProcess } from '../helpers/owned-process.ts';
import { freePort } from '../helpers/ports.ts';
import { smtpConnect } from '../helpers/smtp-client.ts';

/** `[time] LEVEL: message {json}`; the message starts with the sid on session lines. */
const PRETTY_LINE = /^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] (INFO|WARN|ERROR|DEBUG): (.+?)(?: (\{.*\}))?$/;

async function sendOneMessage(port: number): Promise<void> {
  const c = await smtpConnect(port);
  try {
    assert.match(await c.send('EHLO client.example'), /^250/);
    assert.match(await c.send('MAIL FROM:<a@client.example>'), /^250/);
    assert.match(await c.send('RCPT TO:<postmaster@example.test>'), /^250/);
    assert.match(await c.send('DATA'), /^354/);
    assert.match(await c.send('Subject: hello\r\n\r\nhi\r\n.'), /^250 /);
    await c.send('QUIT');
  } finally {
    c.close();
  }
}

/** Checks every line is one pretty event and returns the session's lines (sid first). */
function assertPretty(text: string): { sid: string; lines: string[] } {
  const lines = text.split('\n').filter((l) => l !== '');
  assert.ok(lines.length >= 6, text);
  for (const line of lines) {
    const m = PRETTY_LINE.exec(line);
    assert.ok(m, `one pretty event per line: ${JSON.stringify(line)}`);
    if (m[3] !== undefined) JSON.parse(m[3]);
  }
  const accepted = lines.find((l) => l.includes(' message accepted '));
  assert.ok(accepted, 'a message accepted line');
  const m = / INFO: (\S+) (\S+) message accepted \{.*"from":"a@client.example"/.exec(accepted);
  assert.ok(m, `time, sid, queue id, message: ${accepted}`);
  const sid = m[1];
  assert.ok(m[2].startsWith(sid) && m[2] !== sid, 'the queue id (the sid and a sequence number)');
  assert.ok(lines.some((l) => l.includes(`INFO: ${sid} connect {`)), 'the session\'s connect line');
  assert.ok(lines.some((l) => / INFO: ready \{"workers":2/.test(l)), 'the primary\'s line');
  assert.ok(lines.some((l) => l.includes(`${sid} disconnect {`)));
  return { sid, lines };
}

test('log.format = "pretty": one human line per event from the primary and its workers', async (t) => {
  const server = await startCliServer({ workers: 2, logToml: ['format = "pretty"'] });
  t.after(() => server.cleanup());
  await sendOneMessage(server.port);
  assert.deepEqual(await server.stop(), { code: 0, signal: null });
  assertPretty(server.logText());
});

test('auto, standard output a file: JSON lines, as before', async (t) => {
  const server = await startCliServer({ workers: 2 });
  t.after(() => server.cleanup());
  await sendOneMessage(server.port);
  await server.stop();
  const records = server.logText().trim().split('\n').map((l) => JSON.parse(l) as { msg: string; sid?: string; queueId?: string; time: number });
  const accepted = records.find((r) => r.msg === 'message accepted');
  assert.ok(accepted?.sid !== undefined && accepted.queueId?.startsWith(accepted.sid));
});

test('auto on a terminal: pretty lines (script(1) gives the server a real pseudo-terminal)', async (t) => {
  if (spawnSync('script', ['--version'], { stdio: 'ignore' }).status !== 0) {
    t.skip('script(1) is not installed');
    return;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-tty-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const configPath = path.join(dir, 'portcullis.toml');
  writeFileSync(configPath, `[smtp]\nlisten = ["127.0.0.1:${port}"]\nworkers = 2\n\n[domains]\nlocal = ["example.test"]\n\n[routes]\nlocal = ${JSON.stringify(`maildir:${path.join(dir, 'maildir')}`)}\n\n[spool]\ndir = ${JSON.stringify(path.join(dir, 'spool'))}\n`);
  const ttyLog = path.join(dir, 'tty.log');
  // The server runs on the pty script(1) makes; its transcript (what the terminal showed) is ttyLog.
  const command = [process.execPath, CLI_MAIN, 'serve', '--config', configPath].map((a) => `'${a}'`).join(' ');
  const child = spawn('script', ['-q', '-f', '-e', '-c', command, ttyLog], { cwd: REPO_ROOT, stdio: 'ignore', env: { ...process.env, NODE_OPTIONS: '' } });
  const owned = ownProcess(child);
  t.after(() => owned.stop());
  const read = (): string => {
    try {
      return readFileSync(ttyLog, 'utf8');
    } catch {
      return '';
    }
  };
  const deadline = Date.now() + 15_000;
  while (!/INFO\S*: \S*ready/.test(read()) && !owned.isExited() && Date.now() < deadline) await sleep(50);
  await sendOneMessage(port);
  await sleep(200);
  await owned.stop(); // SIGTERM to script: the server, orphaned, stops itself (parent watch)
  // The terminal's view: colours (it is a terminal) and CRLF line ends; script's own first/last lines.
  const shown = read().replace(/\u001b\[[0-9;]*m/g, '').replace(/\r\n/g, '\n').split('\n').filter((l) => !/^Script (started|done)/.test(l)).join('\n');
  assert.match(read(), /\u001b\[/, 'colours on a terminal');
  assertPretty(shown);
});
