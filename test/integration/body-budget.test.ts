// The body budget over real sockets: six clients upload at once without declaring SIZE, more than
// the server's budget holds together; those that do not fit stream to their body files early
// (each is far under the 1 MiB per-session threshold), and the budget is back to zero once the
// sessions end, however they end (a commit, RSET after a BDAT chunk, a client that vanishes), so
// the next message is held in memory again rather than spilled.

import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultConfig } from '../../src/config/types.ts';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

const BUDGET = 1 << 20;
const HEADER = 'Subject: budget\r\n\r\n';

/** Exactly `bytes` octets of message content: the header section, then 100-octet lines. */
function content(bytes: number, mark: string): string {
  const line = `${mark.repeat(98)}\r\n`;
  const n = Math.floor((bytes - HEADER.length) / line.length);
  const tail = bytes - HEADER.length - n * line.length;
  return HEADER + line.repeat(n) + (tail >= 2 ? `${'t'.repeat(tail - 2)}\r\n` : '');
}

const SIZE = 300_000;

async function bodyFiles(server: TestServer): Promise<number> {
  return (await readdir(path.join(server.spoolDir, 'tmp'))).filter((f) => f.endsWith('.body')).length;
}

/** Polls `isDone` every 20 ms for up to 10 s; returns whether it became true. */
async function until(isDone: () => Promise<boolean> | boolean): Promise<boolean> {
  for (let i = 0; i < 500; i++) {
    if (await isDone()) return true;
    await sleep(20);
  }
  return false;
}

async function opened(server: TestServer): Promise<SmtpClient> {
  const c = await SmtpClient.connect(server.port);
  await c.expect('', 220, 'greeting');
  await c.expect('EHLO client.example\r\n', 250);
  await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
  await c.expect('RCPT TO:<alice@example.test>\r\n', 250);
  return c;
}

test('uploads past the budget spill early; every end gives the budget back; the next message is held in memory again', async (t) => {
  const config = defaultConfig();
  config.domains.local = ['example.test'];
  config.smtp.bodyMemoryBudgetBytes = BUDGET;
  const server = await startTestServer(config);
  t.after(server.stop);
  const texts = Array.from({ length: 6 }, (_, i) => content(SIZE, String.fromCharCode(97 + i)));
  assert.equal(Buffer.byteLength(texts[0]), SIZE);
  // Five DATA uploads and one BDAT chunk, none finished: 6 x 300 kB, the budget holds three.
  // The first two are read whole before the others start, so they are the ones held in memory.
  const clients: SmtpClient[] = [];
  for (let i = 0; i < 6; i++) {
    const c = await opened(server);
    t.after(() => c.close());
    clients.push(c);
    if (i === 1) c.write(`BDAT ${SIZE}\r\n${texts[i]}`);
    else {
      await c.expect('DATA\r\n', 354);
      c.write(texts[i]);
    }
    if (i < 2) assert.ok(await until(() => server.bodyBudgetBytes() === (i + 1) * SIZE), `client ${i} held in memory: ${server.bodyBudgetBytes()}`);
  }
  // All read: every body is either whole in memory (reserved) or in its file.
  const isAllRead = async (): Promise<boolean> => {
    const used = server.bodyBudgetBytes();
    return used % SIZE === 0 && used / SIZE + (await bodyFiles(server)) === 6;
  };
  assert.ok(await until(isAllRead), `budget ${server.bodyBudgetBytes()}, body files ${await bodyFiles(server)}`);
  assert.ok(server.bodyBudgetBytes() <= BUDGET);
  assert.ok((await bodyFiles(server)) >= 3, 'at least three went to their files, each far under its 1 MiB threshold');
  assert.equal((await clients[1].reply())?.code, 250, 'the BDAT chunk');

  // The ends: a client gone mid-data and RSET after the chunk (both held in memory), four commits.
  // A reset, not a FIN: the server sees a socket error, never an end of input (the shell disposes).
  clients[0].socket.resetAndDestroy();
  assert.ok(await until(() => server.bodyBudgetBytes() <= BUDGET - SIZE), 'the vanished client gave its share back');
  await clients[1].expect('RSET\r\n', 250);
  const ids: string[] = [];
  for (const i of [2, 3, 4, 5]) ids.push(/queued as (\S+)/.exec((await clients[i].expect('.\r\n', 250, `end of data ${i}`)).text)![1]);
  assert.ok(await until(() => server.bodyBudgetBytes() === 0), `the budget is back to zero (${server.bodyBudgetBytes()})`);
  assert.ok(await until(async () => (await bodyFiles(server)) === 0), 'no body file is left');
  const stored = new Map<string, string>();
  for await (const e of scanSpool(server.spoolDir)) stored.set(e.envelope.queueId, (await readMessage(server.spoolDir, e.envelope.queueId, e.location))!.content.toString('latin1'));
  assert.deepEqual([...stored.keys()].sort(), [...ids].sort());
  ids.forEach((id, k) => assert.ok(stored.get(id)!.endsWith(texts[k + 2]), `${id} stored byte for byte, from memory or from its file`));

  // No reservation leaked: a new 300 kB upload is held in memory again, not spilled.
  const next = await opened(server);
  t.after(() => next.close());
  await next.expect('DATA\r\n', 354);
  next.write(texts[0]);
  assert.ok(await until(() => server.bodyBudgetBytes() === SIZE), `reserved ${server.bodyBudgetBytes()}`);
  assert.equal(await bodyFiles(server), 0);
  await next.expect('.\r\n', 250);
  await next.expect('QUIT\r\n', 221);
  assert.equal(server.bodyBudgetBytes(), 0);
});
