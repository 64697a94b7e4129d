// Operators rebuild a session's transcript from the debug log (docs/operations.md): check that
// the C:/S: lines rebuilt from the log of a real socket session match what was said, in order.

import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { startTestServer } from '../helpers/server.ts';
import { runSocket } from '../helpers/socket-runner.ts';
import { parseTranscript } from '../helpers/transcript.ts';

test('debug log lines rebuild the session transcript', async (t) => {
  const lines: string[] = [];
  const stream = new PassThrough();
  stream.setEncoding('utf8');
  let pending = '';
  stream.on('data', (d: string) => {
    pending += d;
    const parts = pending.split('\n');
    pending = parts.pop()!;
    lines.push(...parts);
  });
  const dialogue = [
    'S: 220 mx.example.test ESMTP Portcullis',
    'C: HELO client.example',
    'S: 250 mx.example.test',
    'C: MAIL FROM:<a@client.example>',
    'S: 250 2.1.0 Sender ok',
    'C: RCPT TO:<nobody@elsewhere.example>',
    'S: 554 5.7.1 Relay access denied',
    'C: QUIT',
    'S: 221 2.0.0 Bye',
  ];
  const transcript = parseTranscript('log.txt', `@config relay.networks = []\n${dialogue.join('\n')}\n@closed\n`);
  const server = await startTestServer(transcript.config, { logStream: stream, logLevel: 'debug' });
  t.after(() => server.stop());
  await runSocket(transcript, server.port, server.spoolDir);
  await new Promise((r) => setTimeout(r, 50));
  const records = lines.map((l) => JSON.parse(l) as { sid?: string; dir?: string; line?: string; reply?: string; msg: string });
  const sid = records.find((r) => r.msg === 'connect')?.sid;
  assert.ok(sid, 'connect line carries the session id');
  const rebuilt: string[] = [];
  for (const r of records) {
    if (r.sid !== sid) continue;
    if (r.dir === 'C' && r.line !== undefined) rebuilt.push(`C: ${r.line}`);
    if (r.dir === 'S' && r.reply !== undefined) rebuilt.push(...r.reply.split('\r\n').map((x) => `S: ${x}`));
  }
  assert.deepEqual(rebuilt, dialogue);
  assert.ok(records.some((r) => r.sid === sid && r.msg === 'disconnect'), 'a summary line closes the session');
});

test('after QUIT the server closes its side at once: a client that resets after 221 costs no socket error', async (t) => {
  const lines: string[] = [];
  const stream = new PassThrough();
  stream.setEncoding('utf8');
  stream.on('data', (d: string) => lines.push(...d.split('\n').filter((l) => l !== '')));
  const server = await startTestServer(undefined, { logStream: stream, logLevel: 'debug' });
  t.after(() => server.stop());
  const { connect } = await import('node:net');
  for (let i = 0; i < 5; i++) {
    const socket = connect(server.port, '127.0.0.1');
    let seen = '';
    await new Promise<void>((resolve, reject) => {
      socket.on('error', reject);
      socket.on('data', (d: Buffer) => {
        seen += d.toString('latin1');
        if (seen.startsWith('220 ') && !seen.includes('\r\n250')) socket.write('EHLO client.example\r\nQUIT\r\n');
      });
      // The server's FIN comes right after its 221; the client then resets, as smtp-source does.
      socket.once('end', () => {
        socket.resetAndDestroy();
        if (seen.includes('221 ')) resolve();
        else reject(new Error(`closed without 221: ${seen}`));
      });
    });
  }
  await new Promise((r) => setTimeout(r, 100));
  const records = lines.map((l) => JSON.parse(l) as { msg: string });
  assert.equal(records.filter((r) => r.msg === 'disconnect').length, 5);
  assert.equal(records.filter((r) => r.msg === 'socket error').length, 0);
});
