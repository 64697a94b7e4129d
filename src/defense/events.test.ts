import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import pino from 'pino';
import { defenseFired } from './events.ts';
import { Metrics } from '../obs/metrics.ts';

test('defenseFired logs one line with the session, client, rule and limit, and counts the rule', async () => {
  const lines: string[] = [];
  const sink = new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } });
  const log = pino({ level: 'info' }, sink);
  const metrics = new Metrics({ defaultMetrics: false });
  defenseFired(log, metrics, { rule: 'max_connections_per_ip', sessionId: 'S1', client: '192.0.2.7', limit: 20, value: 21, reply: '421 4.7.0' });
  defenseFired(log, metrics, { rule: 'max_connections_per_ip', sessionId: null, client: '192.0.2.7', limit: 20 });
  assert.equal(lines.length, 2);
  const first = JSON.parse(lines[0]!);
  assert.equal(first.msg, 'defense: max_connections_per_ip');
  assert.equal(first.sid, 'S1');
  assert.equal(first.client, '192.0.2.7');
  assert.equal(first.limit, 20);
  assert.equal(first.value, 21);
  assert.equal(first.reply, '421 4.7.0');
  assert.equal(JSON.parse(lines[1]!).sid, undefined);
  const text = await metrics.registry.metrics();
  assert.match(text, /portcullis_defense_events_total\{rule="max_connections_per_ip"\} 2/);
  assert.doesNotMatch(text, /rule="pregreet"/);
});
