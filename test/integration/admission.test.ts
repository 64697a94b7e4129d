// Admission over real sockets ([access], the admission keys of [limits]): a flood over each limit
// gets 421 4.7.0 with one log line and one count naming the rule; a blocked client gets 554 5.7.1
// and is closed without waiting for QUIT; an allow-listed client is never limited; after each, a
// legitimate client still completes a transaction at once. Clients are told apart by binding
// different loopback addresses (127.0.0.x), so one test process can be several clients.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultConfig, type Config } from '../../src/config/types.ts';
import type { DefenseRule } from '../../src/defense/events.ts';
import { hasHaproxy, startHaproxy, type TestHaproxy } from '../helpers/haproxy.ts';
import { logSink, type LogLine } from '../helpers/log-sink.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';
import { SmtpClient } from '../helpers/smtp-client.ts';

/** The server's counts: sessions and replies as the server reports them, defenses by rule. */
function countingMetrics() {
  const defenses = new Map<DefenseRule, number>();
  return {
    defenses,
    sessionOpened() {},
    sessionClosed() {},
    messageAccepted() {},
    reply() {},
    defenseFired(rule: DefenseRule) {
      defenses.set(rule, (defenses.get(rule) ?? 0) + 1);
    },
  };
}

/** The first reply line the server sends, and whether it closed the connection within `timeoutMs`. */
async function firstLineAndClose(port: number, localAddress: string, timeoutMs = 5000): Promise<{ line: string; isClosed: boolean }> {
  const s = net.connect({ host: '127.0.0.1', port, localAddress });
  let received = '';
  s.setEncoding('latin1');
  s.on('data', (d: string) => (received += d));
  s.on('error', () => {});
  const closed = new Promise<boolean>((resolve) => s.once('close', () => resolve(true)));
  const isClosed = await Promise.race([closed, sleep(timeoutMs).then(() => false)]);
  s.destroy();
  return { line: received.split('\r\n')[0] ?? '', isClosed };
}

async function transaction(port: number, localAddress: string): Promise<void> {
  const c = await SmtpClient.connect(port, { localAddress });
  try {
    const greeting = await c.reply();
    assert.equal(greeting?.code, 220, `greeting for ${localAddress}: ${greeting?.text}`);
    await c.expect('EHLO client.example\r\n', 250);
    await c.expect('MAIL FROM:<a@client.example>\r\n', 250);
    await c.expect('RCPT TO:<alice@localhost>\r\n', 250);
    await c.expect('DATA\r\n', 354);
    await c.expect('Subject: t\r\n\r\nhello\r\n.\r\n', 250);
    await c.expect('QUIT\r\n', 221);
  } finally {
    c.close();
  }
}

/** Opens `n` sessions from `localAddress` and waits for each greeting; returns the held clients. */
async function hold(port: number, localAddress: string, n: number): Promise<SmtpClient[]> {
  const held: SmtpClient[] = [];
  for (let i = 0; i < n; i++) {
    const c = await SmtpClient.connect(port, { localAddress });
    held.push(c);
    const g = await c.reply();
    assert.equal(g?.code, 220, `held connection ${i + 1} from ${localAddress}: ${g?.text}`);
  }
  return held;
}

async function untilCount(server: TestServer, n: number): Promise<void> {
  for (let i = 0; i < 200 && server.connectionCount() !== n; i++) await sleep(10);
  assert.equal(server.connectionCount(), n);
}

function admissionConfig(over: (c: Config) => void): Config {
  const config = defaultConfig();
  config.tls.enabled = false;
  config.access.allow = ['127.0.0.3/32'];
  config.access.block = ['127.0.0.4/32'];
  over(config);
  return config;
}

function defenseLines(lines: LogLine[], rule: DefenseRule): LogLine[] {
  return lines.filter((l) => l.msg === `defense: ${rule}`);
}

describe('admission limits', () => {
  const log = logSink();
  const metrics = countingMetrics();
  let server: TestServer;
  before(async () => {
    server = await startTestServer(
      admissionConfig((c) => {
        c.limits.maxConnectionsPerIp = 3;
        c.limits.maxConnectionsPerNetwork = 5;
        c.limits.maxConnections = 8;
        c.limits.refusedSessionSeconds = 1;
        c.limits.refusedSessionCommands = 3;
        c.limits.maxRefusedSessions = 1;
      }),
      { logStream: log.stream, logLevel: 'info', metrics },
    );
  });
  after(() => server.stop());

  test('per address: the connection past max_connections_per_ip gets 421 4.7.0, logged and counted; others still get in', async () => {
    const held = await hold(server.port, '127.0.0.5', 3);
    const over = await firstLineAndClose(server.port, '127.0.0.5');
    assert.match(over.line, /^421 4\.7\.0 /);
    assert.ok(over.isClosed, 'the refused connection is closed');
    assert.doesNotMatch(over.line, /max_connections|\b3\b/, 'the limit is not in the reply');
    const [line] = defenseLines(log.lines, 'max_connections_per_ip');
    assert.equal(line?.client, '127.0.0.5');
    assert.equal(line?.limit, 3);
    assert.equal(line?.reply, '421 4.7.0');
    assert.equal(metrics.defenses.get('max_connections_per_ip'), 1);
    // Another client of the network still completes a transaction at once.
    await transaction(server.port, '127.0.0.6');
    for (const c of held) c.close();
    await untilCount(server, 0);
    // The address's count came back: it is admitted again.
    await transaction(server.port, '127.0.0.5');
  });

  test('per network and in total: past max_connections_per_network and max_connections, 421 4.7.0; the allow list is never limited', async () => {
    const held = [...(await hold(server.port, '127.0.0.7', 3)), ...(await hold(server.port, '127.0.0.8', 2))];
    const overNet = await firstLineAndClose(server.port, '127.0.0.9');
    assert.match(overNet.line, /^421 4\.7\.0 /);
    assert.equal(defenseLines(log.lines, 'max_connections_per_network').at(-1)?.client, '127.0.0.9');
    assert.equal(metrics.defenses.get('max_connections_per_network'), 1);
    // Another /24 fills the total (8) with 3 more.
    held.push(...(await hold(server.port, '127.1.0.1', 3)));
    const overTotal = await firstLineAndClose(server.port, '127.2.0.1');
    assert.match(overTotal.line, /^421 4\.7\.0 /);
    assert.equal(defenseLines(log.lines, 'max_connections').at(-1)?.limit, 8);
    // The allow-listed address is neither counted nor refused, past every limit.
    const allowed = await hold(server.port, '127.0.0.3', 6);
    await transaction(server.port, '127.0.0.3');
    for (const c of [...held, ...allowed]) c.close();
    await untilCount(server, 0);
    await transaction(server.port, '127.0.0.9');
  });

  test('a blocked client gets 554 5.7.1 in place of the greeting, 503 5.7.0 to commands, 221 to QUIT', async () => {
    const c = await SmtpClient.connect(server.port, { localAddress: '127.0.0.4' });
    try {
      const greeting = await c.reply();
      assert.match(greeting?.last ?? '', /^554 5\.7\.1 /);
      assert.equal(defenseLines(log.lines, 'access_block').at(-1)?.client, '127.0.0.4');
      assert.equal(metrics.defenses.get('access_block'), 1);
      // Issue 11: a refused client's commands get 503 5.7.0 (policy), not a sequence error's 5.5.1.
      assert.match((await c.expect('EHLO client.example\r\n', 503)).last, /^503 5\.7\.0 /);
      assert.match((await c.expect('MAIL FROM:<a@client.example>\r\n', 503)).last, /^503 5\.7\.0 /);
      await c.expect('QUIT\r\n', 221);
    } finally {
      c.close();
    }
    await untilCount(server, 0);
    await transaction(server.port, '127.0.0.10');
  });

  test('554 mode is bounded: closed after refused_session_commands commands, and a silent client after refused_session_seconds', async () => {
    const c = await SmtpClient.connect(server.port, { localAddress: '127.0.0.4' });
    try {
      assert.equal((await c.reply())?.code, 554);
      for (let i = 1; i < 3; i++) await c.expect('NOOP\r\n', 503);
      await c.expect('NOOP\r\n', 421, 'the third command ends it');
      assert.equal(await c.line(), null, 'closed');
    } finally {
      c.close();
    }
    // Never sends QUIT, never sends anything: closed by the server within the bound (1 s here).
    const silent = await firstLineAndClose(server.port, '127.0.0.4', 8000);
    assert.match(silent.line, /^554 5\.7\.1 /);
    assert.ok(silent.isClosed, 'a silent refused client is closed without sending QUIT');
    const closedLines = defenseLines(log.lines, 'refused_session_closed');
    assert.deepEqual(closedLines.map((l) => l.limit), [3, '1s']);
    await untilCount(server, 0);
    await transaction(server.port, '127.0.0.10');
  });

  test('past max_refused_sessions a blocked client is closed right after its 554', async () => {
    const held = await SmtpClient.connect(server.port, { localAddress: '127.0.0.4' });
    try {
      assert.equal((await held.reply())?.code, 554);
      const second = await firstLineAndClose(server.port, '127.0.0.4', 4000);
      assert.match(second.line, /^554 5\.7\.1 /);
      assert.ok(second.isClosed);
      assert.equal(defenseLines(log.lines, 'refused_sessions').length, 1);
      assert.equal(metrics.defenses.get('refused_sessions'), 1);
    } finally {
      held.close();
    }
    await untilCount(server, 0);
  });
});

describe('admission rate', () => {
  const log = logSink();
  const metrics = countingMetrics();
  let server: TestServer;
  before(async () => {
    server = await startTestServer(admissionConfig((c) => (c.limits.connectionRatePerIp = { count: 4, windowSeconds: 3600 })), { logStream: log.stream, logLevel: 'info', metrics });
  });
  after(() => server.stop());

  test('connection_rate_per_ip: the connection past the rate gets 421 4.7.0; another address is not slowed', async () => {
    for (let i = 0; i < 4; i++) await transaction(server.port, '127.0.0.11');
    const over = await firstLineAndClose(server.port, '127.0.0.11');
    assert.match(over.line, /^421 4\.7\.0 /);
    const [line] = defenseLines(log.lines, 'connection_rate_per_ip');
    assert.equal(line?.limit, '4/hour');
    assert.equal(line?.client, '127.0.0.11');
    assert.equal(metrics.defenses.get('connection_rate_per_ip'), 1);
    await transaction(server.port, '127.0.0.12');
  });
});

describe('admission behind a real HAProxy (send-proxy-v2)', { skip: hasHaproxy ? false : 'haproxy not installed (scripts/test-deps.sh)' }, () => {
  const log = logSink();
  let server: TestServer;
  let haproxy: TestHaproxy;
  let port = 0;
  before(async () => {
    // Every connection comes from the proxy (127.0.0.3); were the proxy judged, the clients would
    // share its one count. Nothing is allow-listed, so the proxy itself would be limited too.
    server = await startTestServer(
      admissionConfig((c) => {
        c.access.allow = [];
        c.smtp.proxyProtocol = true;
        c.proxy.trusted = ['127.0.0.3/32'];
        c.limits.maxConnectionsPerIp = 2;
        c.access.block = ['127.0.0.23/32'];
      }),
      { logStream: log.stream, logLevel: 'info' },
    );
    haproxy = await startHaproxy([{ serverPort: server.port, sendProxy: 'send-proxy-v2', source: '127.0.0.3' }]);
    port = haproxy.ports[0];
    // The probes above reached the server as LOCAL or as the proxy: let them close.
    await untilCount(server, 0);
  });
  after(async () => {
    await haproxy?.stop();
    await server?.stop();
  });

  test('the per-address limit and the block list judge the client the PROXY header names, not the proxy', async () => {
    const held = await hold(port, '127.0.0.21', 2);
    const over = await firstLineAndClose(port, '127.0.0.21');
    assert.match(over.line, /^421 4\.7\.0 /);
    assert.equal(defenseLines(log.lines, 'max_connections_per_ip').at(-1)?.client, '127.0.0.21');
    // Another client through the same proxy is admitted, and completes a transaction at once.
    await transaction(port, '127.0.0.22');
    const blocked = await firstLineAndClose(port, '127.0.0.23');
    assert.match(blocked.line, /^554 5\.7\.1 /);
    assert.equal(defenseLines(log.lines, 'access_block').at(-1)?.client, '127.0.0.23');
    for (const c of held) c.close();
  });
});

describe('[[listener]] profiles', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer(
      admissionConfig((c) => {
        c.proxy.trusted = ['127.0.0.3/32'];
        c.listener = [
          { address: { host: '127.0.0.1', port: 0 }, role: 'mx', proxyProtocol: false },
          { address: { host: '127.0.0.1', port: 0 }, role: 'mx', proxyProtocol: true },
        ];
      }),
    );
  });
  after(() => server.stop());

  test('each listener has its own PROXY setting: plain clients on one, only trusted proxies on the other', async () => {
    assert.equal(server.ports.length, 2);
    const [plain, proxied] = server.ports as [number, number];
    await transaction(plain, '127.0.0.41');
    // Not a trusted proxy: closed with no greeting.
    const untrusted = await firstLineAndClose(proxied, '127.0.0.41');
    assert.equal(untrusted.line, '');
    assert.ok(untrusted.isClosed);
    // A trusted proxy naming a blocked client: the client is judged (554), not the proxy.
    const s = net.connect({ host: '127.0.0.1', port: proxied, localAddress: '127.0.0.3' });
    let received = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (received += d));
    s.on('error', () => {});
    await new Promise<void>((resolve) => s.once('connect', () => resolve()));
    s.write('PROXY TCP4 127.0.0.4 127.0.0.1 40000 25\r\n');
    for (let i = 0; i < 200 && !received.includes('\r\n'); i++) await sleep(10);
    s.destroy();
    assert.match(received, /^554 5\.7\.1 /);
  });
});
