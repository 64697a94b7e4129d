// Bounded memory against the real server process (issue 11): 2,000 sessions that each send
// MAIL, RCPT, DATA and 64 KiB of a message, then stop, hold at most the node's body budget in
// memory (smtp.body_memory_budget_bytes per worker); the bodies that do not fit go to their files
// in the spool. The server's resident memory (/proc/PID/status, summed over the primary and its
// two workers) stays within a bound set by the budget and a per-session allowance, and a
// legitimate client completes a transaction meanwhile. No timing is asserted.

import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { startCliServer, type CliServer } from '../helpers/cli-server.ts';
import { legitimateTransaction, peakRssKiB, rssKiB, serverPids, serverSockets, until } from '../helpers/memory-probe.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const SESSIONS = 2000;
/** Connections opened at once while the sessions are set up. */
const BATCH = 100;
const WORKERS = 2;
/** Per worker; small so that most of the 2,000 bodies must spill (a default-sized one would hold
 *  512 of them per worker). */
const BUDGET_BYTES = 4 * MiB;
const HEADER = 'Subject: half-sent\r\n\r\n';
const BODY = Buffer.from(HEADER + `${'y'.repeat(98)}\r\n`.repeat(655)); // 65,522 octets, ~64 KiB
/** What one session may cost the server besides the content the budget counts: socket, session
 *  state, the open body file and its handle, the header section it keeps in memory. Measured at
 *  about 16 KiB per session in all (budget included; the idle connection alone is 3-5 KiB). Before
 *  the framer let go of consumed reads (framing.ts), each session also kept its last 64 KiB read
 *  alive: 68 KiB per session, over this bound. */
const PER_SESSION_BYTES = 24 * KiB;
/** read-reclaim.ts: dead read buffers, collected past 16 MiB of growth looked at every 4 MiB read, per worker. */
const RECLAIM_SLACK_BYTES = 20 * MiB;
/** Resident size moves by a few MiB per process with no load at all. */
const NOISE_BYTES = 8 * MiB;

async function bodyFiles(server: CliServer): Promise<number> {
  return (await readdir(path.join(server.spoolDir, 'tmp'))).filter((f) => f.endsWith('.body')).length;
}

async function halfSent(server: CliServer): Promise<SmtpClient> {
  const c = await SmtpClient.connect(server.port);
  try {
    // PIPELINING (RFC 2920): the envelope and DATA in one write, then the replies.
    c.write('EHLO attacker.example\r\nMAIL FROM:<a@attacker.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n');
    for (const code of [220, 250, 250, 250, 354]) {
      const r = await c.reply();
      if (r?.code !== code) throw new Error(`expected ${code}, got ${r?.text ?? 'a close'}`);
    }
    c.write(BODY); // and never the end
    return c;
  } catch (err) {
    c.close();
    throw err;
  }
}

test(`${SESSIONS} sessions each holding a half-sent 64 KiB message stay within the body budget`, { timeout: 110_000 }, async (t) => {
  const server = await startCliServer({ workers: WORKERS, smtpToml: [`body_memory_budget_bytes = ${BUDGET_BYTES}`] });
  t.after(() => server.cleanup());
  const pids = serverPids(server);
  assert.equal(pids.length, 1 + WORKERS);
  await legitimateTransaction(server, 'warm-up');
  const before = rssKiB(pids);
  const clients: SmtpClient[] = [];
  t.after(() => {
    for (const c of clients) c.close();
  });
  for (let i = 0; i < SESSIONS; i += BATCH) clients.push(...(await Promise.all(Array.from({ length: Math.min(BATCH, SESSIONS - i) }, () => halfSent(server)))));
  // Every octet sent is read by the server: nothing waits in our send buffers or its sockets.
  const isAllRead = (): boolean => {
    const mine = serverSockets(server.port);
    return mine.length >= SESSIONS && mine.every((s) => s.unreadBytes === 0) && clients.every((c) => c.socket.writableLength === 0);
  };
  assert.ok(await until(isAllRead, 30_000), 'the server read every half-sent message');
  // What did not fit in the budget is in its body file: at most budget / 64 KiB bodies per
  // worker are held in memory, so at least 2,000 - 2 x 64 = 1,872 went to their files.
  const heldAtMost = WORKERS * Math.floor(BUDGET_BYTES / BODY.length);
  assert.ok(await until(async () => (await bodyFiles(server)) >= SESSIONS - heldAtMost), `body files: ${await bodyFiles(server)}`);
  const peak = await peakRssKiB(pids);
  await legitimateTransaction(server, `during ${SESSIONS} half-sent messages`);
  const growth = (peak - before) * KiB;
  // The bound: the budget per worker (what all sessions hold in memory together), the
  // per-session allowance for everything else, dead read buffers per worker, noise:
  // 2 x 4 + 2,000 x 24 KiB (46.9) + 2 x 20 + 8 = 102.9 MiB, under the 125 MiB the 2,000
  // bodies alone would take in memory.
  const bound = WORKERS * BUDGET_BYTES + SESSIONS * PER_SESSION_BYTES + WORKERS * RECLAIM_SLACK_BYTES + NOISE_BYTES;
  t.diagnostic(`${SESSIONS} half-sent: RSS ${before} KiB before, ${peak} KiB with them held; growth ${(growth / MiB).toFixed(1)} MiB (${((growth / SESSIONS) / KiB).toFixed(1)} KiB per session), bound ${(bound / MiB).toFixed(1)} MiB; ${await bodyFiles(server)} body files`);
  assert.ok(growth < bound, `RSS grew ${growth} octets, bound ${bound}`);
  // Every session ends with its client: no body file outlives its session.
  for (const c of clients) c.close();
  assert.ok(await until(async () => (await bodyFiles(server)) === 0, 30_000), `body files left: ${await bodyFiles(server)}`);
});
