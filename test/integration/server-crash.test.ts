// kill -9 of the real `portcullis serve` process while clients are sending: every message the
// server acknowledged with "250 2.0.0 Ok: queued as ID" must be in the spool with its exact
// content, nothing partial may be returned, and the server must start again on that spool.
// A SIGKILL keeps the page cache, so this checks the ack-after-commit order end to end (socket
// to spool), not the disk's flush. Traffic goes to 127.0.0.1 only.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readMessage, scanSpool, type SpoolDamage } from '../../src/spool/reader.ts';
import { runCli, startCliServer, type CliServer } from '../helpers/cli-server.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';
import { withoutReceived } from '../helpers/transcript.ts';

const CONNECTIONS = 4;
const KILL_AFTER_ACKS = 50;
const MAX_MESSAGES = 300;
const SEND_DEADLINE_MS = 20_000;
/** Messages per session before QUIT and a new connection (below smtp.max_transactions). */
const PER_SESSION = 40;
/** Small, so that some messages take the file-per-message path and the rest the journal. */
const JOURNAL_MAX_MESSAGE_BYTES = 8192;

/** The canonical (stored) content of message n: CRLF lines, some starting with ".",
 *  every seventh one larger than the journal limit. */
function contentFor(n: number): string {
  const lines = [`Message-ID: <crash-${n}@client.example>`, `Subject: crash test ${n}`, 'From: crash@client.example', ''];
  const bodyLines = n % 7 === 3 ? 400 : 3 + (n % 11);
  for (let i = 0; i < bodyLines; i++) lines.push(`line ${i} of message ${n} ${'x'.repeat((n * 31 + i * 7) % 60)}`);
  lines.push(`.a line that starts with a dot in message ${n}`, '.', `end of message ${n}`);
  return `${lines.join('\r\n')}\r\n`;
}

/** Dot-stuffing and the end-of-data line, as a client sends the content. */
function dataFor(n: number): string {
  return `${contentFor(n).replace(/^\./gm, '..')}.\r\n`;
}

type Run = {
  acked: Map<string, number>;
  nextSeq: number;
  killed: boolean;
  awaitingAtKill: number;
  dataInFlightAtKill: number;
  errorsBeforeKill: string[];
};

async function sender(port: number, run: Run, clients: Set<SmtpClient>, dataInFlight: Set<number>, onAck: () => void, deadline: number): Promise<void> {
  while (!run.killed && run.nextSeq < MAX_MESSAGES && Date.now() < deadline) {
    let client: SmtpClient | null = null;
    try {
      client = await SmtpClient.connect(port);
      clients.add(client);
      const banner = await client.reply();
      if (banner?.code !== 220) throw new Error(`banner ${banner?.text ?? '(closed)'}`);
      await client.expect('EHLO crash.client.example\r\n', 250);
      for (let k = 0; k < PER_SESSION && !run.killed && run.nextSeq < MAX_MESSAGES && Date.now() < deadline; k++) {
        const n = run.nextSeq++;
        await client.expect('MAIL FROM:<crash@client.example>\r\n', 250);
        await client.expect('RCPT TO:<alice@example.test>\r\n', 250);
        await client.expect('DATA\r\n', 354);
        dataInFlight.add(n);
        const r = await client.expect(dataFor(n), 250, `data of ${n}`);
        dataInFlight.delete(n);
        const m = /^250 2\.0\.0 Ok: queued as ([A-Za-z0-9]+)$/.exec(r.last);
        if (m === null) throw new Error(`unexpected 250 text ${r.text}`);
        run.acked.set(m[1], n);
        onAck();
      }
      if (!run.killed) await client.expect('QUIT\r\n', 221);
    } catch (err) {
      // After the kill every connection breaks: expected. Before it, a failure.
      if (!run.killed) run.errorsBeforeKill.push((err as Error).message);
      return;
    } finally {
      if (client !== null) {
        clients.delete(client);
        client.close();
      }
    }
  }
}

test('kill -9 of the server mid-traffic loses no acknowledged message and returns nothing partial', { timeout: 90_000 }, async () => {
  let server: CliServer = await startCliServer({ workers: 1, journalMaxMessageBytes: JOURNAL_MAX_MESSAGE_BYTES });
  try {
    const run: Run = { acked: new Map(), nextSeq: 0, killed: false, awaitingAtKill: 0, dataInFlightAtKill: 0, errorsBeforeKill: [] };
    const clients = new Set<SmtpClient>();
    const dataInFlight = new Set<number>();
    const pid = server.pid;
    const onAck = (): void => {
      if (run.killed || run.acked.size < KILL_AFTER_ACKS) return;
      run.killed = true;
      run.awaitingAtKill = [...clients].filter((c) => c.isAwaitingReply).length;
      run.dataInFlightAtKill = dataInFlight.size;
      process.kill(pid, 'SIGKILL');
    };
    const deadline = Date.now() + SEND_DEADLINE_MS;
    const senders = Array.from({ length: CONNECTIONS }, () => sender(server.port, run, clients, dataInFlight, onAck, deadline));
    await Promise.all(senders);

    assert.deepEqual(run.errorsBeforeKill, [], 'client errors before the kill');
    assert.ok(run.killed, `the kill happened (only ${run.acked.size} acks of ${run.nextSeq} sent before the limits)`);
    assert.deepEqual(await server.exited, { code: null, signal: 'SIGKILL' }, 'the server died of the SIGKILL');
    assert.ok(run.awaitingAtKill >= 1, 'some connection was waiting for a reply when the server was killed');
    console.log(
      `# killed after ${run.acked.size} acks, ${run.nextSeq} messages started; at the kill ${run.awaitingAtKill} connection(s) awaited a reply, ` +
        `${run.dataInFlightAtKill} message(s) had their data sent without a reply`,
    );

    // The spool as recovery sees it: only complete records, each exactly what was sent.
    const damage: SpoolDamage[] = [];
    const stored = new Map<string, number>();
    const seqsStored = new Set<number>();
    let largeStored = 0;
    for await (const entry of scanSpool(server.spoolDir, { onDamage: (d) => damage.push(d) })) {
      const { queueId } = entry.envelope;
      assert.ok(!stored.has(queueId), `${queueId} returned twice`);
      const message = await readMessage(server.spoolDir, queueId, entry.location);
      assert.ok(message, `${queueId} listed but not readable`);
      const text = message.content.toString('latin1');
      assert.equal(message.content.length, entry.envelope.size, `${queueId}: size in the envelope`);
      const n = Number(/^Message-ID: <crash-(\d+)@client\.example>\r\n/m.exec(text)?.[1] ?? NaN);
      assert.ok(Number.isInteger(n), `${queueId}: not one of our messages:\n${text.slice(0, 300)}`);
      assert.ok(!seqsStored.has(n), `message ${n} stored twice`);
      seqsStored.add(n);
      assert.match(text, new RegExp(`^Received: [^\\r\\n]*\\r\\n(?:[ \\t][^\\r\\n]*\\r\\n)*`), `${queueId}: Received header first`);
      assert.ok(text.slice(0, 400).includes(` id ${queueId}\r\n`), `${queueId}: Received names its id`);
      assert.equal(withoutReceived(text), contentFor(n), `${queueId}: content of message ${n} intact`);
      if (entry.location.startsWith('messages/')) largeStored++;
      stored.set(queueId, n);
    }
    console.log(`# spool after the kill: ${stored.size} complete messages (${largeStored} in their own file), ${damage.length} damage report(s)`);
    for (const d of damage) console.log(`# spool damage after the kill (skipped by the scan): ${JSON.stringify(d)}`);

    const lost = [...run.acked].filter(([id, n]) => stored.get(id) !== n).map(([id, n]) => `${id} (message ${n})`);
    assert.deepEqual(lost, [], 'acknowledged messages missing from the spool (or stored under another id)');
    assert.ok(largeStored > 0, 'some acknowledged messages took the file-per-message path');
    assert.ok(stored.size - largeStored > 0, 'some took the journal');

    // The server starts again on the same spool, serves, and lists the old messages.
    server = await server.restart();
    const client = await SmtpClient.connect(server.port);
    try {
      assert.equal((await client.reply())?.code, 220);
      await client.expect('EHLO crash.client.example\r\n', 250);
      await client.expect('MAIL FROM:<crash@client.example>\r\n', 250);
      await client.expect('RCPT TO:<alice@example.test>\r\n', 250);
      await client.expect('DATA\r\n', 354);
      const r = await client.expect(dataFor(100_000), 250, 'data after restart');
      const newId = /queued as ([A-Za-z0-9]+)$/.exec(r.text)?.[1];
      assert.ok(newId, r.text);
      await client.expect('QUIT\r\n', 221);
      const listed = await runCli(server.configPath, ['spool', 'list']);
      assert.equal(listed.code, 0, listed.stderr);
      const ids = new Set(listed.stdout.toString('utf8').split('\n').filter((l) => l !== '').map((l) => l.split(' ')[0]));
      for (const id of [...stored.keys(), newId]) assert.ok(ids.has(id), `spool list after the restart lacks ${id}`);
      assert.equal(ids.size, stored.size + 1, 'spool list after the restart: the old messages and the new one');
      const errors = server.logText().split('\n').filter((l) => /^\{"level":(?:50|60),/.test(l));
      assert.deepEqual(errors, [], 'error lines in the server log');
    } finally {
      client.close();
    }
  } finally {
    await server.cleanup();
  }
});
