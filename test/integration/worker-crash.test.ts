// A crashed worker is restarted by the supervisor without dropping the other workers' sessions:
// with two workers, kill -9 one of them while sessions on both are mid-transaction; sessions on
// the survivor finish their messages, and a new worker comes up and serves.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { startCliServer } from '../helpers/cli-server.ts';
import { SmtpClient, type ClientReply } from '../helpers/smtp-client.ts';

const SESSIONS = 16;

/** The last line of the next reply, or null when the connection closed first. */
async function last(reply: Promise<ClientReply | null>): Promise<string | null> {
  return (await reply)?.last ?? null;
}

type LogLine = { msg: string; pid: number; worker?: number; port?: number; sid?: string };

function logLines(text: string): LogLine[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

test('a killed worker is restarted; sessions on the other worker are not dropped', { timeout: 60_000 }, async (t) => {
  const server = await startCliServer({ workers: 2 });
  t.after(() => server.cleanup());
  const clients: SmtpClient[] = [];
  // The kernel spreads connections over the workers' SO_REUSEPORT sockets by a hash of the
  // addresses: with 16 sessions the chance that all land on one worker is 2^-15.
  for (let i = 0; i < SESSIONS; i++) {
    const c = await SmtpClient.connect(server.port);
    clients.push(c);
    assert.match((await last(c.reply())) ?? '', /^220 /);
    assert.match((await last(c.command('EHLO client.example'))) ?? '', /^250 /);
    assert.match((await last(c.command('MAIL FROM:<a@client.example>'))) ?? '', /^250 /);
    assert.match((await last(c.command('RCPT TO:<alice@example.test>'))) ?? '', /^250 /);
  }
  // Which worker holds which session: the connect log line names the client port and the pid.
  await new Promise((r) => setTimeout(r, 200));
  const connects = logLines(server.logText()).filter((l) => l.msg === 'connect');
  const pidByClient = new Map(clients.map((c) => [c, connects.find((l) => l.port === c.socket.localPort)?.pid]));
  const pidOf = (c: SmtpClient): number => {
    const pid = pidByClient.get(c);
    assert.ok(pid !== undefined, 'every session has a connect line');
    return pid;
  };
  const pids = [...new Set(clients.map(pidOf))];
  assert.equal(pids.length, 2, 'sessions are spread over both workers');
  const victim = pids[0];
  assert.notEqual(victim, server.pid, 'the victim is a worker, not the primary');
  // Workers start with the supervisor's V8 flags (WORKER_V8_FLAGS: read-reclaim.ts needs gc).
  for (const pid of pids) assert.ok(readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').includes('--expose-gc'), `worker ${pid} has --expose-gc`);
  process.kill(victim, 'SIGKILL');

  for (const c of clients) {
    if (pidOf(c) === victim) {
      // Its sessions end with the process (no reply to DATA).
      assert.equal(await last(c.command('DATA')), null);
    } else {
      assert.match((await last(c.command('DATA'))) ?? '', /^354 /);
      c.write('Subject: survivor\r\n\r\nstill here\r\n.\r\n');
      assert.match((await last(c.reply())) ?? '', /^250 2\.0\.0 Ok: queued as /);
      assert.match((await last(c.command('QUIT'))) ?? '', /^221 /);
    }
  }

  // The supervisor notices and starts a new worker, which serves.
  const deadline = Date.now() + 15_000;
  let lines = logLines(server.logText());
  while (!lines.some((l) => l.msg === 'listening' && !pids.includes(l.pid)) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    lines = logLines(server.logText());
  }
  assert.ok(lines.some((l) => l.msg === 'worker died; restarting'), 'the death is logged');
  assert.ok(lines.some((l) => l.msg === 'listening' && !pids.includes(l.pid)), 'a new worker listens');
  for (let i = 0; i < 4; i++) {
    const c = await SmtpClient.connect(server.port);
    assert.match((await last(c.reply())) ?? '', /^220 /);
    assert.match((await last(c.command('QUIT'))) ?? '', /^221 /);
  }
});
