// The metrics API: what each call counts, the label values it may produce, the exposition text,
// the cluster sum (prom-client's aggregate over workers' non-global registries) and the /metrics
// HTTP endpoint (paths, methods, failures).

import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import { pino, type Logger } from 'pino';
import { AggregatorRegistry } from 'prom-client';
import { Metrics, PrimaryMetrics, startMetricsServer, type MetricsSource } from './metrics.ts';

/** The sample lines of an exposition text (no # HELP / # TYPE). */
function samples(text: string): string[] {
  return text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
}

function value(text: string, series: string): number | undefined {
  const line = samples(text).find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('counts sessions, messages, bytes, negative replies and verdicts', async () => {
  const m = new Metrics({ defaultMetrics: false });
  m.sessionOpened();
  m.sessionOpened();
  m.sessionOpened();
  m.sessionClosed();
  m.messageAccepted(1000);
  m.messageAccepted(234);
  for (const code of [220, 250, 250, 354, 421, 550, 550, 451]) m.reply(code);
  m.verdict('recipients', 'rcpt', 'continue');
  m.verdict('recipients', 'rcpt', 'reject');
  m.verdict('recipients', 'rcpt', 'reject');
  m.verdict('greylist', 'rcpt', 'tempfail');
  m.verdict('dnsbl', 'connect', 'disconnect');
  const text = await m.registry.metrics();
  assert.equal(value(text, 'portcullis_sessions_total'), 3);
  assert.equal(value(text, 'portcullis_sessions_active'), 2);
  assert.equal(value(text, 'portcullis_messages_accepted_total'), 2);
  assert.equal(value(text, 'portcullis_messages_accepted_bytes_total'), 1234);
  assert.equal(value(text, 'portcullis_replies_total{code="550"}'), 2);
  assert.equal(value(text, 'portcullis_replies_total{code="421"}'), 1);
  assert.equal(value(text, 'portcullis_replies_total{code="451"}'), 1);
  assert.ok(!/portcullis_replies_total\{code="(2|3)\d\d"\}/.test(text), 'only 4xx and 5xx are counted');
  assert.equal(value(text, 'portcullis_policy_verdicts_total{check="recipients",stage="rcpt",action="reject"}'), 2);
  assert.equal(value(text, 'portcullis_policy_verdicts_total{check="recipients",stage="rcpt",action="continue"}'), 1);
  assert.equal(value(text, 'portcullis_policy_verdicts_total{check="greylist",stage="rcpt",action="tempfail"}'), 1);
  assert.equal(value(text, 'portcullis_policy_verdicts_total{check="dnsbl",stage="connect",action="disconnect"}'), 1);
  assert.match(text, /^# TYPE portcullis_policy_verdicts_total counter$/m);
  assert.match(text, /^# TYPE portcullis_sessions_active gauge$/m);
  // Counters read the same on a second scrape (collect() sets totals, it does not add again).
  assert.equal(await m.registry.metrics(), text);
});

test('a fresh registry exposes every metric at zero and no labelled series', async () => {
  const text = await new Metrics({ defaultMetrics: false }).registry.metrics();
  for (const name of ['sessions_total', 'sessions_active', 'messages_accepted_total', 'messages_accepted_bytes_total']) {
    assert.equal(value(text, `portcullis_${name}`), 0, name);
  }
  assert.match(text, /^# TYPE portcullis_replies_total counter$/m);
  assert.ok(!samples(text).some((l) => l.includes('{')), text);
});

test('label values stay bounded whatever the callers pass', async () => {
  const m = new Metrics({ defaultMetrics: false });
  m.verdict('recipients', 'rcpt', 'frobnicate');
  for (let i = 0; i < 100; i++) m.verdict(`check${i}`, 'mail', 'reject');
  m.reply(600);
  m.reply(399);
  m.reply(-1);
  m.reply(4.5);
  const text = await m.registry.metrics();
  assert.equal(value(text, 'portcullis_policy_verdicts_total{check="recipients",stage="rcpt",action="other"}'), 1);
  const checks = new Set(samples(text).filter((l) => l.startsWith('portcullis_policy_verdicts_total')).map((l) => /check="([^"]*)"/.exec(l)![1]));
  assert.ok(checks.size <= 65, `${checks.size} check label values`); // 64 names, then "other"
  assert.ok(checks.has('other'));
  const other = value(text, 'portcullis_policy_verdicts_total{check="other",stage="mail",action="reject"}') ?? 0;
  assert.equal(other, 100 - 63, 'the check names past the cap are counted as "other"');
  assert.ok(!samples(text).some((l) => l.startsWith('portcullis_replies_total')), text);
});

test("the default process metrics carry the portcullis_ prefix and stay in the registry's own", async () => {
  const m = new Metrics();
  const text = await m.registry.metrics();
  assert.match(text, /^portcullis_process_cpu_user_seconds_total /m);
  assert.match(text, /^portcullis_nodejs_heap_size_used_bytes /m);
  assert.ok(!/^process_cpu/m.test(text));
});

test('the cluster sum adds counters and gauges over workers (non-global registries)', async () => {
  const a = new Metrics();
  const b = new Metrics();
  a.sessionOpened();
  a.messageAccepted(10);
  a.reply(550);
  a.verdict('recipients', 'rcpt', 'reject');
  b.sessionOpened();
  b.sessionOpened();
  b.messageAccepted(5);
  b.reply(550);
  b.verdict('recipients', 'rcpt', 'reject');
  // What the primary's AggregatorRegistry does with the workers' answers.
  const summed = await AggregatorRegistry.aggregate([await a.registry.getMetricsAsJSON(), await b.registry.getMetricsAsJSON()]).metrics();
  assert.equal(value(summed, 'portcullis_sessions_total'), 3);
  assert.equal(value(summed, 'portcullis_sessions_active'), 3);
  assert.equal(value(summed, 'portcullis_messages_accepted_total'), 2);
  assert.equal(value(summed, 'portcullis_messages_accepted_bytes_total'), 15);
  assert.equal(value(summed, 'portcullis_replies_total{code="550"}'), 2);
  assert.equal(value(summed, 'portcullis_policy_verdicts_total{check="recipients",stage="rcpt",action="reject"}'), 2);
  assert.match(summed, /^portcullis_process_cpu_user_seconds_total /m);
});

test('the primary counts worker restarts', async () => {
  const p = new PrimaryMetrics();
  p.workerRestarted();
  assert.equal(value(await p.registry.metrics(), 'portcullis_worker_restarts_total'), 1);
});

type HttpAnswer = { status: number; headers: http.IncomingHttpHeaders; body: string };

function request(port: number, method: string, path: string): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (body += s));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

function capturingLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: pino({ level: 'info' }, { write: (s: string) => void lines.push(s) }), lines };
}

test('GET /metrics serves the registry; other paths 404, other methods 405', async (t) => {
  const m = new Metrics({ defaultMetrics: false });
  m.sessionOpened();
  const { log } = capturingLogger();
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0 }, m.source(), log);
  t.after(() => server.close());
  const { port } = server.address();
  const ok = await request(port, 'GET', '/metrics');
  assert.equal(ok.status, 200);
  assert.equal(ok.headers['content-type'], m.registry.contentType);
  assert.equal(value(ok.body, 'portcullis_sessions_total'), 1);
  assert.equal((await request(port, 'GET', '/metrics?x=1')).status, 200);
  assert.equal((await request(port, 'GET', '/')).status, 404);
  assert.equal((await request(port, 'GET', '/metrics/')).status, 404);
  const post = await request(port, 'POST', '/metrics');
  assert.equal(post.status, 405);
  assert.equal(post.headers.allow, 'GET');
  assert.equal((await request(port, 'HEAD', '/metrics')).status, 405);
});

test('a failing scrape answers 500, is logged, and the endpoint keeps serving', async (t) => {
  let fail = true;
  const source: MetricsSource = {
    contentType: 'text/plain; version=0.0.4; charset=utf-8',
    text: async () => {
      if (fail) throw new Error('worker did not answer');
      return 'x 1\n';
    },
  };
  const { log, lines } = capturingLogger();
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0 }, source, log);
  t.after(() => server.close());
  const { port } = server.address();
  const failed = await request(port, 'GET', '/metrics');
  assert.equal(failed.status, 500);
  assert.ok(!failed.body.includes('worker did not answer'), 'the reason goes to the log, not to the scraper');
  assert.ok(lines.some((l) => l.includes('metrics scrape failed') && l.includes('worker did not answer')), lines.join(''));
  fail = false;
  const ok = await request(port, 'GET', '/metrics');
  assert.equal(ok.status, 200);
  assert.equal(ok.body, 'x 1\n');
});

test('concurrent scrapes share one collection', async (t) => {
  let calls = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const source: MetricsSource = {
    contentType: 'text/plain; version=0.0.4; charset=utf-8',
    text: async () => {
      calls++;
      await gate;
      return 'x 1\n';
    },
  };
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0 }, source, capturingLogger().log);
  t.after(() => server.close());
  const { port } = server.address();
  const pending = [request(port, 'GET', '/metrics'), request(port, 'GET', '/metrics'), request(port, 'GET', '/metrics')];
  await new Promise((r) => setTimeout(r, 100));
  release();
  const answers = await Promise.all(pending);
  assert.deepEqual(answers.map((a) => a.status), [200, 200, 200]);
  assert.equal(calls, 1);
});

test('close() stops the endpoint, keep-alive connections included', async () => {
  const m = new Metrics({ defaultMetrics: false });
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0 }, m.source(), capturingLogger().log);
  const { port } = server.address();
  const agent = new http.Agent({ keepAlive: true });
  await new Promise<void>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/metrics', agent }, (res) => {
      res.resume();
      res.on('end', () => resolve());
    }).on('error', reject);
  });
  await server.close();
  agent.destroy();
  await assert.rejects(request(port, 'GET', '/metrics'));
});

test('spool space: free bytes and the low flag; over workers the lowest reading and any low', async () => {
  const a = new Metrics({ defaultMetrics: false });
  const b = new Metrics({ defaultMetrics: false });
  assert.equal(value(await a.registry.metrics(), 'portcullis_spool_free_bytes'), undefined, 'absent before a measurement');
  assert.equal(value(await a.registry.metrics(), 'portcullis_spool_low'), 0);
  a.spoolSpace(5_000, true);
  b.spoolSpace(7_000, false);
  assert.equal(value(await a.registry.metrics(), 'portcullis_spool_free_bytes'), 5_000);
  assert.equal(value(await a.registry.metrics(), 'portcullis_spool_low'), 1);
  const summed = await AggregatorRegistry.aggregate([await a.registry.getMetricsAsJSON(), await b.registry.getMetricsAsJSON()]).metrics();
  assert.equal(value(summed, 'portcullis_spool_free_bytes'), 5_000);
  assert.equal(value(summed, 'portcullis_spool_low'), 1);
});
