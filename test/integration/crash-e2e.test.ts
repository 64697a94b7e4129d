// The issue's full-scale crash test, real processes only: `portcullis serve` (a primary and two
// workers, started through the CLI as its own process group) accepts 5,000 messages from a few
// pipelining client sessions and delivers them to Postfix's smtp-sink (an `smtp:` route) and to
// Dovecot LMTP (Maildirs), while the whole process group is killed with SIGKILL ten times and
// started again each time. Checked at the end: every message acknowledged with 250 reached every
// recipient, complete; duplicates are only deliveries that were in flight at a kill (never two
// copies from one run, bounded per kill); no recipient is ever recorded delivered twice;
// nothing failed or bounced; the spool is empty (segments and message files reclaimed, `portcullis
// queue list` empty). Traffic to 127.0.0.1 only; every loop bounded in count and time.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { sendControl } from '../../src/server/control.ts';
import { runCli, startCliServer, type CliServer } from '../helpers/cli-server.ts';
import { sinkContent, startDovecotLmtp, startSmtpSink, type DovecotLmtp, type SmtpSink } from '../helpers/mail-peers.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

const TOTAL = 5_000;
const KILLS = 10;
const SESSIONS = 6;
/** Messages per client session before QUIT and a new connection (below smtp.max_transactions). */
const PER_SESSION = 60;
/** queue.destination_concurrency (the default): what may be in flight to one next hop at a kill. */
const DESTINATION_CONCURRENCY = 20;
const DESTINATIONS = 2;
/** Deliveries a run must have made (on top of its acks) before it is killed: every kill hits
 *  the delivery side, not only the accepting side. */
const MIN_DELIVERIES_PER_RUN = 40;
/** Small, so that some messages take the file-per-message path (messages/) and must be reclaimed. */
const JOURNAL_MAX_MESSAGE_BYTES = 8192;
/** The smallest segment the spool allows. (Each writer appends well under it per run, so the
 *  segments reclaimed here are those sealed by their writer's death, and the live writers' at the
 *  clean stop; rotation is covered by src/queue/manager.test.ts.) */
const SEGMENT_MAX_BYTES = 1_048_576;
const TEST_TIMEOUT_MS = 170_000;
/** Bounds for each phase. */
const RUN_DEADLINE_MS = 30_000;
const DRAIN_DEADLINE_MS = 60_000;
/** After a kill: how long the peers' deliveries must stay unchanged, and for how long at most. */
const SETTLE_QUIET_MS = 250;
const SETTLE_MAX_MS = 5_000;
const SINK_USERS = 4;
const LMTP_USERS = ['u0', 'u1', 'u2', 'u3'];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type Side = 'sink' | 'lmtp';

/** Message n: most go to one side, every tenth to both (one message, two destinations). */
function recipientsOf(n: number): Array<{ side: Side; address: string }> {
  const sink = { side: 'sink' as const, address: `s${n % SINK_USERS}@sink.test` };
  const lmtp = { side: 'lmtp' as const, address: `${LMTP_USERS[n % LMTP_USERS.length]}@lmtp.test` };
  if (n % 10 === 0) return [sink, lmtp];
  return n % 2 === 0 ? [sink] : [lmtp];
}

/** The stored (canonical) content of message n: CRLF lines, some starting with a dot, every
 *  25th larger than the journal limit; the last line marks a complete delivery. */
function contentFor(n: number): string {
  const lines = [`Message-ID: <ce-${n}@client.test>`, `Subject: crash-e2e ${n}`, 'From: crash@client.test', `To: ${recipientsOf(n).map((r) => r.address).join(', ')}`, ''];
  const bodyLines = n % 25 === 7 ? 200 : 4 + (n % 9);
  for (let i = 0; i < bodyLines; i++) lines.push(`line ${i} of message ${n} ${'x'.repeat((n * 31 + i * 7) % 60)}`);
  lines.push('.', `.leading dot ${n}`, `end of crash-e2e ${n}`);
  return `${lines.join('\r\n')}\r\n`;
}

function dataFor(n: number): string {
  return `${contentFor(n).replace(/^\./gm, '..')}.\r\n`;
}

/** What the client side knows across runs. */
type Traffic = {
  /** message number -> queue id, for every 250 received. */
  acked: Map<number, string>;
  /** Numbers handed to a session and not yet answered (their 250 may be lost at a kill). */
  inFlight: Set<number>;
  /** Numbers sent whose 250 never came (a kill): they may or may not be delivered. */
  unanswered: Set<number>;
  next: number;
  errors: string[];
};

type RunState = { isKilled: boolean };

async function session(port: number, traffic: Traffic, run: RunState, deadline: number): Promise<void> {
  while (!run.isKilled && traffic.acked.size + traffic.inFlight.size < TOTAL && Date.now() < deadline) {
    let client: SmtpClient | null = null;
    let current: number | null = null;
    try {
      client = await SmtpClient.connect(port);
      const banner = await client.reply();
      if (banner?.code !== 220) throw new Error(`banner ${banner?.text ?? '(closed)'}`);
      await client.expect('EHLO crash.client.test\r\n', 250);
      for (let k = 0; k < PER_SESSION && !run.isKilled && traffic.acked.size + traffic.inFlight.size < TOTAL && Date.now() < deadline; k++) {
        const n = traffic.next++;
        current = n;
        traffic.inFlight.add(n);
        const rcpts = recipientsOf(n);
        // RFC 2920: MAIL, every RCPT and DATA in one write; the content after the 354.
        client.write(`MAIL FROM:<crash@client.test>\r\n${rcpts.map((r) => `RCPT TO:<${r.address}>\r\n`).join('')}DATA\r\n`);
        for (const [what, code] of [['MAIL', 250], ...rcpts.map(() => ['RCPT', 250]), ['DATA', 354]] as Array<[string, number]>) {
          const r = await client.reply();
          if (r === null) throw new Error(`closed before the reply to ${what} of ${n}`);
          if (r.code !== code) throw new Error(`${what} of ${n}: expected ${code}, got ${r.text}`);
        }
        const r = await client.expect(dataFor(n), 250, `data of ${n}`);
        const m = /^250 2\.0\.0 Ok: queued as ([A-Za-z0-9]+)$/.exec(r.last);
        if (m === null) throw new Error(`unexpected 250 text ${r.text}`);
        traffic.inFlight.delete(n);
        current = null;
        traffic.acked.set(n, m[1]);
      }
      if (!run.isKilled) await client.expect('QUIT\r\n', 221);
    } catch (err) {
      // After the kill every connection breaks: expected. Before it, a failure.
      if (!run.isKilled) traffic.errors.push((err as Error).message);
      return;
    } finally {
      if (current !== null) {
        traffic.inFlight.delete(current);
        traffic.unanswered.add(current);
      }
      client?.close();
    }
  }
}

/** Every file the two peers have delivered so far, with its side. */
function deliveredFiles(sink: SmtpSink, dovecot: DovecotLmtp): Array<{ file: string; side: Side }> {
  return [...sink.dumpFiles().map((file) => ({ file, side: 'sink' as const })), ...LMTP_USERS.flatMap((u) => dovecot.deliveredFiles(u).map((file) => ({ file, side: 'lmtp' as const })))];
}

/** Waits (bounded) until no Maildir/tmp holds a file and the listing of delivered files stays
 *  the same for a moment. */
async function settled(sink: SmtpSink, dovecot: DovecotLmtp): Promise<void> {
  const deadline = Date.now() + SETTLE_MAX_MS;
  let before = deliveredCount(sink, dovecot);
  while (Date.now() < deadline) {
    await sleep(SETTLE_QUIET_MS);
    const now = deliveredCount(sink, dovecot);
    if (now === before && LMTP_USERS.every((u) => dovecot.writingFiles(u).length === 0)) return;
    before = now;
  }
}

function deliveredCount(sink: SmtpSink, dovecot: DovecotLmtp): number {
  return sink.dumpFiles().length + LMTP_USERS.reduce((sum, u) => sum + dovecot.deliveredFiles(u).length, 0);
}

type Delivery = { n: number; side: Side; run: number; isComplete: boolean };

/** A delivered file by our number; complete when it holds the content exactly, up to the marker
 *  line (smtp-sink and Dovecot store LF line ends; smtp-sink adds its own trace fields first). */
function judge(side: Side, file: string, run: number): Delivery | null {
  let raw: string;
  try {
    raw = readFileSync(file, 'latin1');
  } catch (err) {
    // smtp-sink opens its dump at the start of a transaction and removes it when the client goes
    // before the end of the data: a transfer cut by a kill, listed before smtp-sink noticed.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && side === 'sink') return null;
    throw err;
  }
  const text = side === 'sink' ? sinkContent(raw) : raw;
  const n = Number(/^Subject: crash-e2e (\d+)$/m.exec(text)?.[1] ?? NaN);
  assert.ok(Number.isInteger(n), `a ${side} message that is not one of ours (${file}):\n${text.slice(0, 300)}`);
  const expected = contentFor(n).replace(/\r\n/g, '\n');
  // smtp-sink ends its dump with one empty line of its own.
  return { n, side, run, isComplete: text.endsWith(side === 'sink' ? `${expected}\n` : expected) };
}

type LogLine = { level: number; msg: string; queueId?: string; index?: number; status?: string };

function logLines(server: CliServer): LogLine[] {
  return server
    .logText()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

function segments(server: CliServer): string[] {
  const dir = path.join(server.spoolDir, 'segments');
  return existsSync(dir) ? readdirSync(dir) : [];
}

function messageFiles(server: CliServer): string[] {
  const dir = path.join(server.spoolDir, 'messages');
  return existsSync(dir) ? readdirSync(dir) : [];
}

async function queueSize(server: CliServer): Promise<number> {
  const entries = (await sendControl(server.spoolDir, { op: 'queue.list', args: [] })) as unknown[];
  return entries.length;
}

test(`kill -9 of the whole server ${KILLS} times while it accepts and delivers ${TOTAL} messages to smtp-sink and Dovecot LMTP: nothing acknowledged is lost, duplicates only from deliveries in flight, the spool is reclaimed`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const startedAt = Date.now();
  const sink = await startSmtpSink();
  t.after(() => sink.stop());
  const dovecot = await startDovecotLmtp(LMTP_USERS);
  t.after(() => dovecot.stop());
  let server = await startCliServer({
    workers: 2,
    processGroup: true,
    localDomains: ['lmtp.test'],
    routes: ['default = "refuse"', `local = "lmtp:127.0.0.1:${dovecot.port}"`, `"sink.test" = "smtp:[127.0.0.1]:${sink.port}"`],
    journalMaxMessageBytes: JOURNAL_MAX_MESSAGE_BYTES,
    spoolToml: [`segment_max_bytes = ${SEGMENT_MAX_BYTES}`, 'min_free_bytes = 0'],
  });
  t.after(() => server.cleanup());

  const traffic: Traffic = { acked: new Map(), inFlight: new Set(), unanswered: new Set(), next: 0, errors: [] };
  const kills: Array<{ acked: number; delivered: number; awaiting: number; ms: number }> = [];
  let restartMs = 0;
  /** Each delivered file, by the run during which it appeared (listed after each kill). */
  const runOfFile = new Map<string, { side: Side; run: number }>();
  const attribute = (run: number): void => {
    for (const { file, side } of deliveredFiles(sink, dovecot)) if (!runOfFile.has(file)) runOfFile.set(file, { side, run });
  };
  /** The most message files (messages/*.msg) seen at once while accepting: the file-per-message
   *  path is used (each lives from its commit to its delivery, so it is sampled often). */
  let maxMessageFiles = 0;
  for (let run = 0; run <= KILLS; run++) {
    if (run > 0) {
      const t0 = Date.now();
      server = await server.restart();
      restartMs += Date.now() - t0;
    }
    const state: RunState = { isKilled: false };
    const deadline = Date.now() + RUN_DEADLINE_MS;
    const senders = Array.from({ length: SESSIONS }, () => session(server.port, traffic, state, deadline));
    if (run < KILLS) {
      // Kill at a different point each run: after 250 to 550 more acks (or at the end of the
      // input), once this run has delivered some too.
      const ackTarget = Math.min(TOTAL, traffic.acked.size + 250 + ((run * 137) % 300));
      const deliveredTarget = deliveredCount(sink, dovecot) + MIN_DELIVERIES_PER_RUN;
      // Acks are counted in memory (polled often); deliveries by listing directories (less often:
      // the test shares two cores with the server and the peers).
      while (Date.now() < deadline && traffic.acked.size < ackTarget) {
        maxMessageFiles = Math.max(maxMessageFiles, messageFiles(server).length);
        await sleep(5);
      }
      while (Date.now() < deadline && deliveredCount(sink, dovecot) < deliveredTarget) await sleep(25);
      assert.ok(Date.now() < deadline, `run ${run}: ${traffic.acked.size} acks (target ${ackTarget}), ${deliveredCount(sink, dovecot)} deliveries (target ${deliveredTarget}) before the deadline`);
      assert.equal(server.workerPids().length, 2, `run ${run}: two workers listening`);
      state.isKilled = true;
      kills.push({ acked: traffic.acked.size, delivered: deliveredCount(sink, dovecot), awaiting: traffic.inFlight.size, ms: Date.now() - startedAt });
      maxMessageFiles = Math.max(maxMessageFiles, messageFiles(server).length);
      assert.deepEqual(await server.killGroup(), { code: null, signal: 'SIGKILL' }, 'the primary died of the SIGKILL');
      // Nothing of this run can start a delivery any more, but a next hop may still finish one
      // whose data it had whole (Dovecot writes Maildir/tmp, then links it into new/): once they
      // are quiet, every file not seen before is this run's work.
      await settled(sink, dovecot);
      attribute(run);
    }
    await Promise.all(senders);
    assert.deepEqual(traffic.errors, [], `client errors before the kill of run ${run}`);
  }
  assert.equal(traffic.acked.size, TOTAL, 'every message acknowledged in the end');
  const acceptedMs = Date.now() - startedAt;

  // The last run delivers what is left.
  const drainDeadline = Date.now() + DRAIN_DEADLINE_MS;
  let left = await queueSize(server);
  while (left > 0 && Date.now() < drainDeadline) {
    await sleep(200);
    left = await queueSize(server);
  }
  const drainedMs = Date.now() - startedAt;
  console.log(`# accepted in ${acceptedMs} ms, queue empty (${left} left) after ${drainedMs} ms, ${restartMs} ms restarting`);
  console.log(`# kills (acks, deliveries, sessions awaiting a 250, ms): ${kills.map((k) => `${k.acked}/${k.delivered}/${k.awaiting}/${k.ms}`).join(' ')}`);
  assert.equal(left, 0, 'the queue empties');

  // Every acknowledged message at every recipient, complete; count the duplicates.
  attribute(KILLS);
  const judged = [...runOfFile].map(([file, { side, run }]) => judge(side, file, run));
  const got = judged.filter((d) => d !== null);
  const cut = judged.length - got.length;
  /** (message, side) -> the runs that delivered a complete copy. */
  const complete = new Map<string, number[]>();
  let partial = 0;
  for (const d of got) {
    if (!d.isComplete) {
      partial++;
      continue;
    }
    const key = `${d.n}/${d.side}`;
    complete.set(key, [...(complete.get(key) ?? []), d.run]);
  }
  const lost: string[] = [];
  for (const n of traffic.acked.keys()) for (const r of recipientsOf(n)) if (!complete.has(`${n}/${r.side}`)) lost.push(`${n} to ${r.address} (${traffic.acked.get(n)})`);
  assert.deepEqual(lost.slice(0, 20), [], `${lost.length} acknowledged deliveries missing`);
  for (const d of got) assert.ok(traffic.acked.has(d.n) || traffic.unanswered.has(d.n), `message ${d.n} delivered but never sent`);
  // A duplicate is a copy delivered in a run that was killed before it recorded the delivery,
  // delivered again by a later run: never two copies from one run (that would be a second
  // delivery without a crash in between), none from the last run (never killed), and from each
  // kill only what was in flight then: at most the destination concurrency per destination
  // waiting for the next hop's answer, plus the answered ones whose outcome still waited for the
  // state log's group fsync (a delivery frees its slot when the answer comes, not when it is
  // recorded: the slot limits connections to the peer). Bounded per kill by twice the slots.
  const sameRun = [...complete].filter(([, runs]) => new Set(runs).size < runs.length).map(([k, runs]) => `${k} in runs ${runs.join(',')}`);
  assert.deepEqual(sameRun, [], 'delivered twice by one run');
  const redeliveredFrom = new Map<string, number>();
  for (const [key, runs] of complete) {
    const side = key.split('/')[1];
    for (const r of [...runs].sort((a, b) => a - b).slice(0, -1)) redeliveredFrom.set(`${r}/${side}`, (redeliveredFrom.get(`${r}/${side}`) ?? 0) + 1);
  }
  const fromKill = (r: number): number => (redeliveredFrom.get(`${r}/sink`) ?? 0) + (redeliveredFrom.get(`${r}/lmtp`) ?? 0);
  const perKillBound = 2 * DESTINATIONS * DESTINATION_CONCURRENCY;
  const overBound = Array.from({ length: KILLS }, (_, r) => r).filter((r) => fromKill(r) > perKillBound);
  assert.deepEqual(overBound, [], `kills with more than ${perKillBound} duplicates (the deliveries that can be in flight)`);
  assert.equal(fromKill(KILLS), 0, 'the last run (never killed) is the source of no duplicate');
  const duplicates = [...complete.values()].reduce((sum, runs) => sum + runs.length - 1, 0);
  const duplicateBound = KILLS * DESTINATIONS * DESTINATION_CONCURRENCY;
  assert.ok(duplicates <= duplicateBound, `${duplicates} duplicate deliveries, more than the ${duplicateBound} that can be in flight at ${KILLS} kills`);
  const perKill = Array.from({ length: KILLS }, (_, r) => `${redeliveredFrom.get(`${r}/sink`) ?? 0}+${redeliveredFrom.get(`${r}/lmtp`) ?? 0}`).join(' ');

  // The durable record: no recipient recorded delivered twice (that would be a delivery after
  // its delivery was recorded); nothing failed, nothing bounced, no error logged.
  const lines = logLines(server);
  const recorded = new Map<string, number>();
  for (const l of lines) if (l.msg === 'queue: delivered') recorded.set(`${l.queueId}/${l.index}`, (recorded.get(`${l.queueId}/${l.index}`) ?? 0) + 1);
  const twice = [...recorded].filter(([, c]) => c > 1).map(([k]) => k);
  assert.deepEqual(twice, [], 'recipients recorded delivered more than once');
  const deferred = lines.filter((l) => l.msg === 'queue: deferred').length;
  assert.deepEqual(lines.filter((l) => l.msg === 'queue: failed' || l.msg === 'DSN queued'), [], 'nothing failed or bounced');
  assert.deepEqual(lines.filter((l) => l.level >= 50), [], 'error lines in the server log');
  const warnings = new Map<string, number>();
  for (const l of lines) if (l.level === 40) warnings.set(l.msg, (warnings.get(l.msg) ?? 0) + 1);

  // The spool: while the last run still serves, only its live writers' segments are left, and no
  // message file; after a clean stop and start, nothing.
  const live = new Set(server.workerPids().map(String));
  const stale = segments(server).filter((f) => ![...live].some((pid) => f.includes(`p${pid}-`)));
  assert.deepEqual(stale, [], 'segments of killed writers reclaimed');
  assert.deepEqual(messageFiles(server), [], 'message files reclaimed');
  const stateLogs = readdirSync(path.join(server.spoolDir, 'queue')).filter((f) => f.startsWith('state-'));
  const stopped = await runCli(server.configPath, ['stop'], 60_000);
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.deepEqual(await server.exited, { code: 0, signal: null });
  server = await server.restart();
  const reclaimDeadline = Date.now() + 20_000;
  while (segments(server).length > 0 && Date.now() < reclaimDeadline) await sleep(100);
  assert.deepEqual(segments(server), [], 'every segment reclaimed after the clean restart');
  assert.deepEqual(messageFiles(server), [], 'no message file left');
  const listing = await runCli(server.configPath, ['queue', 'list']);
  assert.equal(listing.code, 0, listing.stderr);
  assert.equal(listing.stdout.toString(), 'queue is empty\n');

  const expected = [...traffic.acked.keys()].reduce((sum, n) => sum + recipientsOf(n).length, 0);
  console.log(
    `# ${TOTAL} messages (${expected} deliveries) accepted in ${acceptedMs} ms, all delivered after ${drainedMs} ms ` +
      `(${KILLS} kills, ${restartMs} ms restarting); ${traffic.unanswered.size} sent without a 250 (at a kill); ` +
      `${duplicates} duplicate deliveries (bound ${duplicateBound}; per kill, sink+lmtp: ${perKill}), ${partial} incomplete files and ${cut} cut transfers (removed by smtp-sink) at the peers, ${deferred} deferrals recorded; ` +
      `up to ${maxMessageFiles} message files at once; state log ${stateLogs.join(',')}; warnings: ${JSON.stringify(Object.fromEntries(warnings))}`,
  );
  assert.ok(maxMessageFiles > 0, 'some messages took the file-per-message path (and were reclaimed)');
});
