// limits.connection_rate_shared over real sockets and a real redis-server on loopback: two server
// instances ("two nodes") with the same config, each with its own connection to the same Redis,
// as two Portcullis nodes behind a load balancer. Shared, the rate holds for the cluster (the
// connection past it gets 421 4.7.0 on either node); not shared, each node counts its own; Redis
// gone, connections are admitted with one warning. Clients are 127.0.0.x source addresses, none
// allow-listed, each test its own so they never share a count. The last test runs two real
// `portcullis serve` processes of two workers each, as the worker wires the store in.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultConfig, type Config } from '../../src/config/types.ts';
import { sharedRate } from '../../src/defense/shared-rate.ts';
import { LazyStateStore } from '../../src/store/lazy.ts';
import { openStateStore } from '../../src/store/open.ts';
import type { StateStore } from '../../src/store/store.ts';
import { startCliServer } from '../helpers/cli-server.ts';
import { startRedisServer, type RedisTestServer } from '../helpers/redis-server.ts';
import { logSink, type LogLine } from '../helpers/log-sink.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

function countingMetrics() {
  const defenses = new Map<string, number>();
  return {
    defenses,
    sessionOpened() {},
    sessionClosed() {},
    messageAccepted() {},
    reply() {},
    defenseFired(rule: string) {
      defenses.set(rule, (defenses.get(rule) ?? 0) + 1);
    },
  };
}

/** The first line the server sends to a client from `localAddress` (bounded); then the client goes. */
async function firstLine(port: number, localAddress: string, timeoutMs = 5000): Promise<string> {
  const s = net.connect({ host: '127.0.0.1', port, localAddress });
  s.setEncoding('latin1');
  s.on('error', () => {});
  let received = '';
  const line = new Promise<string>((resolve) => {
    s.on('data', (d: string) => {
      received += d;
      if (received.includes('\r\n')) resolve(received.split('\r\n')[0]!);
    });
    s.once('close', () => resolve(received.split('\r\n')[0] ?? ''));
  });
  const result = await Promise.race([line, sleep(timeoutMs).then(() => `(no line within ${timeoutMs} ms)`)]);
  s.destroy();
  return result;
}

function nodeConfig(redisUrl: string, isShared: boolean): Config {
  const config = defaultConfig();
  config.tls.enabled = false;
  // Only 127.0.0.3 is allow-listed: the clients below (127.0.0.2x) are limited.
  config.access.allow = ['127.0.0.3/32'];
  config.state.store = redisUrl;
  config.limits.connectionRatePerIp = { count: 4, windowSeconds: 60 };
  config.limits.connectionRateShared = isShared;
  return config;
}

type Node = { server: TestServer; store: StateStore; log: ReturnType<typeof logSink>; metrics: ReturnType<typeof countingMetrics> };

/** One node: a server with its own (lazy, as the worker opens it) connection to the store. */
async function startNode(redisUrl: string, isShared: boolean): Promise<Node> {
  const config = nodeConfig(redisUrl, isShared);
  const store = new LazyStateStore(() => openStateStore(redisUrl, { dir: '.' }));
  const log = logSink();
  const metrics = countingMetrics();
  const server = await startTestServer(config, {
    logStream: log.stream,
    logLevel: 'info',
    metrics,
    sharedRate: isShared ? sharedRate(store, config.limits.connectionRatePerIp) : null,
  });
  return { server, store, log, metrics };
}

async function stopNode(node: Node): Promise<void> {
  await node.server.stop();
  await node.store.close();
}

describe('the connection rate shared by two nodes through Redis', () => {
  let redis: RedisTestServer;
  let a: Node;
  let b: Node;
  before(async () => {
    redis = await startRedisServer();
    a = await startNode(redis.url, true);
    b = await startNode(redis.url, true);
  });
  after(async () => {
    await stopNode(a);
    await stopNode(b);
    await redis.stop();
  });

  test('across both nodes only 4 connections in the window are admitted; the 5th gets 421 on either node', async () => {
    const client = '127.0.0.21';
    const greetings: string[] = [];
    for (const node of [a, b, a, b]) greetings.push(await firstLine(node.server.port, client));
    for (const [i, g] of greetings.entries()) assert.match(g, /^220 /, `connection ${i + 1}`);
    assert.match(await firstLine(a.server.port, client), /^421 4\.7\.0 /);
    assert.match(await firstLine(b.server.port, client), /^421 4\.7\.0 /);
    for (const node of [a, b]) {
      const lines = node.log.lines.filter((l) => l.msg === 'defense: connection_rate_per_ip');
      assert.equal(lines.length, 1);
      assert.equal(lines[0]!.client, client);
      assert.equal(lines[0]!.limit, '4/min');
      assert.equal(lines[0]!.reply, '421 4.7.0');
      assert.equal(node.metrics.defenses.get('connection_rate_per_ip'), 1);
    }
    // Another address is not slowed, on either node; an allow-listed one is never counted.
    assert.match(await firstLine(a.server.port, '127.0.0.22'), /^220 /);
    assert.match(await firstLine(b.server.port, '127.0.0.22'), /^220 /);
    for (let i = 0; i < 6; i++) assert.match(await firstLine(a.server.port, '127.0.0.3'), /^220 /);
    assert.equal(await a.store.get(`v1:rate:conn:127.0.0.3:${Math.floor((Date.now() - (Date.now() % 60_000)) / 1000)}`), null);
  });
});

describe('the connection rate not shared: each node counts its own', () => {
  let redis: RedisTestServer;
  let a: Node;
  let b: Node;
  before(async () => {
    redis = await startRedisServer();
    a = await startNode(redis.url, false);
    b = await startNode(redis.url, false);
  });
  after(async () => {
    await stopNode(a);
    await stopNode(b);
    await redis.stop();
  });

  test('each node admits 4 from one address, and refuses its own 5th; the store is never opened', async () => {
    const client = '127.0.0.31';
    for (const node of [a, b]) {
      for (let i = 0; i < 4; i++) assert.match(await firstLine(node.server.port, client), /^220 /, `connection ${i + 1}`);
    }
    assert.match(await firstLine(a.server.port, client), /^421 4\.7\.0 /);
    assert.match(await firstLine(b.server.port, client), /^421 4\.7\.0 /);
    assert.equal((a.store as LazyStateStore).isOpen, false);
    assert.equal((b.store as LazyStateStore).isOpen, false);
  });
});

describe('the shared rate with Redis gone', () => {
  let redis: RedisTestServer;
  let a: Node;
  before(async () => {
    redis = await startRedisServer();
    a = await startNode(redis.url, true);
  });
  after(async () => {
    await stopNode(a);
    await redis.stop();
  });

  test('connections are admitted on the node\'s own count, with one warn line', async () => {
    const client = '127.0.0.41';
    assert.match(await firstLine(a.server.port, client), /^220 /, 'with Redis up');
    assert.equal(a.log.lines.filter((l) => l.level === 40).length, 0);
    await redis.stop();
    for (let i = 0; i < 3; i++) assert.match(await firstLine(a.server.port, client), /^220 /, `connection ${i + 2}, Redis stopped`);
    const warnings = a.log.lines.filter((l) => l.level === 40);
    assert.equal(warnings.length, 1, JSON.stringify(warnings));
    assert.equal(warnings[0]!.msg, 'admission: the shared rate did not answer; admitted on the node\'s own count');
    assert.equal(warnings[0]!.client, client);
    // The node's own rate still holds: the 5th connection is refused without Redis.
    assert.match(await firstLine(a.server.port, client), /^421 4\.7\.0 /);
  });
});

test('two real nodes of two workers each share the rate through Redis', { timeout: 90_000 }, async (t) => {
  const redis = await startRedisServer();
  t.after(() => redis.stop());
  const extraToml = `[access]\nallow = []\n[limits]\nconnection_rate_per_ip = "4/min"\nconnection_rate_shared = true\n[state]\nstore = "${redis.url}"\n`;
  const a = await startCliServer({ workers: 2, extraToml });
  t.after(() => a.cleanup());
  const b = await startCliServer({ workers: 2, extraToml });
  t.after(() => b.cleanup());
  const client = '127.0.0.51';
  const greetings: string[] = [];
  for (const node of [a, b, a, b]) greetings.push(await firstLine(node.port, client));
  assert.deepEqual(greetings.map((g) => g.slice(0, 4)), ['220 ', '220 ', '220 ', '220 '], greetings.join(' | '));
  assert.match(await firstLine(a.port, client), /^421 4\.7\.0 /);
  assert.match(await firstLine(b.port, client), /^421 4\.7\.0 /);
  // The refusing worker's log line may reach the file a moment after its 421 reached us.
  for (const node of [a, b]) {
    const rule = /"rule":"connection_rate_per_ip".*"limit":"4\/min"/;
    for (let i = 0; i < 50 && !rule.test(node.logText()); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(node.logText(), rule);
  }
});
