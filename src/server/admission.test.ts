// Admission joined with the cluster's rate (limits.connection_rate_shared), against SharedRate
// stand-ins: over the cluster's rate the node's grant is given back and the refusal is the local
// rate's; an unavailable store admits, with warnings paced; allow-listed clients are never counted.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { accessLists } from '../defense/access.ts';
import type { SharedRate, SharedRateAnswer } from '../defense/shared-rate.ts';
import { Admission } from './admission.ts';

const LIMITS = { maxConnections: 100, maxConnectionsPerIp: 10, maxConnectionsPerNetwork: 50, connectionRatePerIp: { count: 60, windowSeconds: 60 } };

function admissionWith(answer: SharedRateAnswer): { admission: Admission; lines: Record<string, unknown>[]; counted: string[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, new Writable({ write(chunk: Buffer, _e, done) { lines.push(JSON.parse(chunk.toString('utf8'))); done(); } }));
  const counted: string[] = [];
  const shared: SharedRate = { count: async (address) => (counted.push(address), answer) };
  const admission = new Admission({ access: accessLists(['192.0.2.100/32'], []), limits: LIMITS, prefixes: { ipv4: 24, ipv6: 64 }, log, sharedRate: shared });
  return { admission, lines, counted };
}

test('over the cluster\'s rate: 421 4.7.0 as connection_rate_per_ip, and the node\'s own count given back', async () => {
  const { admission, lines } = admissionWith({ kind: 'over', value: 61 });
  const decision = await admission.admit('192.0.2.7', 1000);
  assert.ok(decision.kind === 'refuse');
  assert.equal(decision.rule, 'connection_rate_per_ip');
  assert.equal(`${decision.reply.code} ${decision.reply.enhanced}`, '421 4.7.0');
  assert.equal(admission.liveCount, 0, 'the node\'s grant is given back');
  await new Promise((resolve) => setImmediate(resolve));
  const line = lines.find((l) => l.msg === 'defense: connection_rate_per_ip');
  assert.equal(line?.limit, '60/min');
  assert.equal(line?.value, 61);
});

test('within the rate: admitted and counted by the node; an allow-listed client is never sent to the store', async () => {
  const { admission, counted } = admissionWith({ kind: 'within' });
  const decision = await admission.admit('192.0.2.7', 1000);
  assert.equal(decision.kind, 'allow');
  assert.equal(admission.liveCount, 1);
  const allowed = admission.admit('192.0.2.100', 1000);
  assert.ok(!(allowed instanceof Promise) && allowed.kind === 'allow');
  assert.deepEqual(counted, ['192.0.2.7']);
});

test('the store unavailable: admitted, one warning per interval however many connections', async () => {
  const { admission, lines } = admissionWith({ kind: 'unavailable', reason: 'connection lost' });
  for (let i = 0; i < 5; i++) assert.equal((await admission.admit(`192.0.2.${i + 1}`, 1000 + i)).kind, 'allow');
  assert.equal((await admission.admit('192.0.2.9', 1000 + 61_000)).kind, 'allow');
  await new Promise((resolve) => setImmediate(resolve));
  const warnings = lines.filter((l) => l.level === 40);
  assert.equal(warnings.length, 2);
  assert.equal(warnings[1]!.held, 4);
  assert.equal(admission.liveCount, 6);
});
