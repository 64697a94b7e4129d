// The transcript files, played over a real loopback socket against a real server and spool (and,
// for @verdict lines, the transcript's stub checks in the server's real policy pipeline).

import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { runSocket, startTranscriptServer } from '../helpers/socket-runner.ts';
import { loadTranscript } from '../helpers/transcript.ts';

const dir = new URL('../transcripts/', import.meta.url).pathname;
const files = readdirSync(dir).filter((f) => f.endsWith('.txt')).sort();

for (const file of files) {
  const t = loadTranscript(dir + file);
  if (t.peer !== '127.0.0.1') continue; // a socket's peer is always loopback
  test(`transcript ${file} (socket)`, async (ctx) => {
    const { server, hooks } = await startTranscriptServer(t);
    ctx.after(() => server.stop());
    await runSocket(t, server.port, server.spoolDir, hooks);
  });
}
