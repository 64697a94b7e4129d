// GET /metrics on the real `portcullis serve`: with workers the primary answers with the workers'
// counters summed (prom-client's AggregatorRegistry over cluster IPC); with one worker the process
// serves its own. SMTP traffic (accepted messages, one recipient refused by the table) goes over
// loopback with the suite's SMTP client; every wait is bounded; the helper signals only the PID it spawned.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { startCliServer } from '../helpers/cli-server.ts';
import { freePort } from '../helpers/ports.ts';
import { SmtpClient, type ClientReply } from '../helpers/smtp-client.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One SMTP session, one command at a time; returns each reply's code. */
async function session(port: number, commands: string[]): Promise<number[]> {
  const client = await SmtpClient.connect(port);
  const code = async (reply: Promise<ClientReply | null>): Promise<number> => {
    const r = await reply;
    if (r === null) throw new Error('closed before a reply');
    return r.code;
  };
  try {
    const codes = [await code(client.reply())];
    for (const c of commands) codes.push(await code(client.command(c)));
    return codes;
  } finally {
    client.close();
  }
}

function get(port: number, urlPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('metrics request timed out')));
    req.on('error', reject);
  });
}

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const MESSAGE = ['HELO client.example', 'MAIL FROM:<sender@client.example>', 'RCPT TO:<alice@example.test>', 'DATA', 'Subject: metrics\r\n\r\nhello\r\n.', 'QUIT'];
const REFUSED = ['HELO client.example', 'MAIL FROM:<sender@client.example>', 'RCPT TO:<nobody@example.test>', 'QUIT'];
const SENT = 3;

for (const workers of [2, 1]) {
  test(`GET /metrics with smtp.workers = ${workers}: sessions, messages, replies and verdicts`, { timeout: 90_000 }, async (t) => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-metrics-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const table = path.join(dir, 'recipients.txt');
    writeFileSync(table, 'alice@example.test\n');
    const metricsPort = await freePort();
    const extraToml = ['[recipients]', `table = ${JSON.stringify(table)}`, '[policy]', 'checks = ["recipients"]', '[metrics]', `listen = "127.0.0.1:${metricsPort}"`].join('\n');
    const s = await startCliServer({ workers, extraToml });
    t.after(() => s.cleanup());

    for (let i = 0; i < SENT; i++) assert.deepEqual(await session(s.port, MESSAGE), [220, 250, 250, 250, 354, 250, 221]);
    assert.deepEqual(await session(s.port, REFUSED), [220, 250, 250, 550, 221]);

    // The sessions have ended on the client side; the server may count the close a moment later.
    let text = '';
    const deadline = Date.now() + 10_000;
    for (;;) {
      const r = await get(metricsPort, '/metrics');
      assert.equal(r.status, 200, r.body);
      text = r.body;
      if (value(text, 'portcullis_sessions_active') === 0 || Date.now() > deadline) break;
      await sleep(100);
    }
    assert.equal(value(text, 'portcullis_sessions_active'), 0, text);
    // The helper's readiness probe is a session too, hence >=.
    assert.ok((value(text, 'portcullis_sessions_total') ?? 0) >= SENT + 1, text);
    assert.equal(value(text, 'portcullis_messages_accepted_total'), SENT, text);
    assert.ok((value(text, 'portcullis_messages_accepted_bytes_total') ?? 0) > SENT * 20, text);
    assert.equal(value(text, 'portcullis_replies_total{code="550"}'), 1, text);
    assert.equal(value(text, 'portcullis_policy_verdicts_total{check="recipients",stage="rcpt",action="reject"}'), 1, text);
    assert.equal(value(text, 'portcullis_policy_verdicts_total{check="recipients",stage="rcpt",action="continue"}'), SENT, text);
    assert.match(text, /^portcullis_process_cpu_user_seconds_total /m);
    if (workers > 1) assert.equal(value(text, 'portcullis_worker_restarts_total'), 0, text);
    // Summed over the workers, the version line is still one line (prom-client takes the first).
    assert.equal(text.split('\n').filter((l) => l.startsWith('portcullis_nodejs_version_info')).length, 1, text);

    assert.equal((await get(metricsPort, '/')).status, 404);

    assert.deepEqual(await s.stop(), { code: 0, signal: null }, s.logText());
    await assert.rejects(get(metricsPort, '/metrics'), 'the endpoint is closed with the server');
    assert.ok(!/metrics scrape failed/.test(s.logText()), s.logText());
  });
}
