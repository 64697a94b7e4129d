import assert from 'node:assert/strict';
import { test } from 'node:test';
import { splitLimits } from './admission.ts';
import { AdmissionPoolServer, PoolClient, type AdmissionRequests } from './admission-share.ts';

const LIMITS = { maxConnections: 10_000, maxConnectionsPerIp: 20, maxConnectionsPerNetwork: 100, connectionRatePerIp: { count: 60, windowSeconds: 60 } };

test('splitLimits: W local shares plus the pool are exactly each limit', () => {
  for (const workers of [1, 2, 3, 7, 64]) {
    const { local, pool } = splitLimits(LIMITS, workers);
    assert.equal(workers * local.maxConnectionsPerIp + pool.maxConnectionsPerIp, 20);
    assert.equal(workers * local.maxConnections + pool.maxConnections, 10_000);
    assert.equal(workers * local.connectionRatePerIp.count + pool.connectionRatePerIp.count, 60);
    assert.ok(workers * local.maxConnectionsPerNetwork <= 50, 'the workers hold at most half on their own');
  }
});

test('the pool grants up to its share, refuses past it, and takes back what a gone worker held', () => {
  const server = new AdmissionPoolServer({ ...LIMITS, maxConnectionsPerIp: 2 }, { ipv4: 24, ipv6: 64 });
  const a = server.handle(1, { t: 'admit', items: [{ id: 1, address: '192.0.2.1' }, { id: 2, address: '192.0.2.1' }, { id: 3, address: '192.0.2.1' }] }, 0);
  assert.deepEqual(a?.items.map((i) => i.rule), [null, null, 'max_connections_per_ip']);
  server.handle(1, { t: 'admit-release', ids: [1] }, 0);
  assert.equal(server.liveCount, 1);
  server.workerGone(1);
  assert.equal(server.liveCount, 0);
});

test('PoolClient: batches one turn\'s requests, fails open without an answer, gives back a late grant', async () => {
  const sent: AdmissionRequests[] = [];
  const client = new PoolClient((m) => sent.push(m), 50);
  const first = client.request('192.0.2.1');
  const second = client.request('192.0.2.2');
  await Promise.resolve();
  assert.equal(sent.length, 1, 'one message for both');
  client.onAnswers({ t: 'admit-answers', items: [{ id: 1, rule: null }] });
  const granted = await first;
  assert.equal(granted.kind, 'granted');
  assert.equal((await second).kind, 'unavailable');
  // The primary grants the second after the deadline: the grant goes straight back.
  client.onAnswers({ t: 'admit-answers', items: [{ id: 2, rule: null }] });
  if (granted.kind === 'granted') granted.release();
  await Promise.resolve();
  const releases = sent.filter((m) => m.t === 'admit-release');
  assert.deepEqual(releases.flatMap((m) => (m.t === 'admit-release' ? m.ids : [])).sort(), [1, 2]);
});
