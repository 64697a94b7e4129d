// The log formats: JSON lines unless asked for pretty (or "auto" on a terminal); a pretty event is
// one line with time, level, session id, queue id and message, and client text stays escaped.

import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLogger, resolveLogFormat } from './log.ts';

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.setEncoding('utf8').on('data', (d: string) => (text += d));
  return { stream, text: () => text };
}

test('log format: auto is pretty on a terminal only; json and pretty are what they say', () => {
  assert.equal(resolveLogFormat('auto', true), 'pretty');
  assert.equal(resolveLogFormat('auto', false), 'json');
  assert.equal(resolveLogFormat('json', true), 'json');
  assert.equal(resolveLogFormat('pretty', false), 'pretty');
});

test('pretty: one line per event with time, level, sid, queue id and message; client text escaped', async () => {
  const out = capture();
  const log = createLogger({ level: 'info', format: 'pretty' }, { worker: 2 }, { stream: out.stream, isTty: false });
  const session = log.child({ sid: '1M84Z2G1RYD9V37DW' });
  session.info({ queueId: '1M84Z2G1RYD9V37DW01', from: 'a@example.test', helo: 'evil\u001b[31m\r\nS: 250 fake' }, 'message accepted');
  session.error({ err: new Error('boom\nsecond line') }, 'internal error in session');
  log.info({ workers: 2 }, 'ready');
  await sleep(20);
  const lines = out.text().split('\n');
  assert.equal(lines.pop(), '', 'ends with a newline');
  assert.equal(lines.length, 3, out.text());
  assert.match(lines[0], /^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] INFO: 1M84Z2G1RYD9V37DW 1M84Z2G1RYD9V37DW01 message accepted \{.*"worker":2.*\}$/);
  assert.ok(!lines[0].includes('\u001b') && !lines[0].includes('\r'), 'control characters stay escaped');
  assert.match(lines[1], /^\[.*Z\] ERROR: 1M84Z2G1RYD9V37DW internal error in session \{.*"err":\{.*boom\\nsecond line.*\}$/);
  assert.match(lines[2], /^\[.*Z\] INFO: ready \{"worker":2,"workers":2\}$/);
});

test('json: when not a terminal (auto) every line is a JSON object', async () => {
  const out = capture();
  const log = createLogger({ level: 'info', format: 'auto' }, {}, { stream: out.stream, isTty: false });
  log.child({ sid: 'S1' }).info({ queueId: 'S101' }, 'message accepted');
  await sleep(20);
  const record = JSON.parse(out.text().trim()) as Record<string, unknown>;
  assert.equal(record.msg, 'message accepted');
  assert.equal(record.sid, 'S1');
  assert.equal(record.queueId, 'S101');
  assert.equal(typeof record.time, 'number');
});
