// Admission limits hold across worker processes: with two workers (the kernel spreads one
// client's connections over both), a client gets exactly max_connections_per_ip sessions however
// they fall, each worker taking its share on its own and the primary counting the rest
// (server/admission-share.ts); another client still completes a transaction at once.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCliServer } from '../helpers/cli-server.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

const LIMIT = 6;
const ATTEMPTS = 14;

test('max_connections_per_ip is the node\'s, not each worker\'s', { timeout: 60_000 }, async (t) => {
  const server = await startCliServer({ workers: 2, extraToml: `[access]\nallow = []\n[limits]\nmax_connections_per_ip = ${LIMIT}\n` });
  t.after(() => server.cleanup());
  const held: SmtpClient[] = [];
  const codes: number[] = [];
  try {
    for (let i = 0; i < ATTEMPTS; i++) {
      const c = await SmtpClient.connect(server.port, { localAddress: '127.0.0.31' });
      held.push(c);
      codes.push((await c.reply())?.code ?? 0);
    }
    assert.equal(codes.filter((c) => c === 220).length, LIMIT, `greetings: ${codes.join(' ')}`);
    assert.equal(codes.filter((c) => c === 421).length, ATTEMPTS - LIMIT, `refusals: ${codes.join(' ')}`);
    // Both workers served some (else this would not test the sharing); 2^-13 to fail by chance.
    const workers = new Set(server.logText().split('\n').filter((l) => l.includes('"msg":"connect"')).map((l) => (JSON.parse(l) as { worker?: number }).worker));
    assert.ok(workers.size === 2, `connections reached workers ${[...workers].join(', ')}`);
    assert.match(server.logText(), /"rule":"max_connections_per_ip".*"limit":6/);
    // Another client is admitted and completes a transaction at once.
    const other = await SmtpClient.connect(server.port, { localAddress: '127.0.0.32' });
    held.push(other);
    assert.equal((await other.reply())?.code, 220);
    await other.expect('EHLO client.example\r\n', 250);
    await other.expect('MAIL FROM:<a@client.example>\r\n', 250);
    await other.expect('RCPT TO:<alice@example.test>\r\n', 250);
    await other.expect('DATA\r\n', 354);
    await other.expect('Subject: t\r\n\r\nhello\r\n.\r\n', 250);
    await other.expect('QUIT\r\n', 221);
  } finally {
    for (const c of held) c.close();
  }
  // Once closed, the counts come back (the primary's too): the client is admitted again.
  let code = 0;
  for (let i = 0; i < 50 && code !== 220; i++) {
    await sleep(50);
    const c = await SmtpClient.connect(server.port, { localAddress: '127.0.0.31' });
    code = (await c.reply())?.code ?? 0;
    c.close();
  }
  assert.equal(code, 220);
});
