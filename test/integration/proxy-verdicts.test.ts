// Verdict memory behind a real HAProxy (send-proxy-v2): a DNS list refuses the client the PROXY
// header names, and what verdict memory remembers is that client, never the proxy every client
// arrives from. A second connection of the listed client is refused from memory without a DNS
// query, another client behind the same proxy is greeted, and the stored key names the client's
// address. Without this, one listed client would get the proxy remembered, and with it everyone.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { parseConfig } from '../../src/config/load.ts';
import { buildPipeline } from '../../src/policy/build.ts';
import { parseVerdictKey, VERDICT_KEY_PREFIX } from '../../src/policy/verdict-memory.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { startDnsServer, type DnsTestServer } from '../helpers/dns-server.ts';
import { hasHaproxy, startHaproxy, type TestHaproxy } from '../helpers/haproxy.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/** The first line the server sends to a client connecting through the proxy from `from`. */
function banner(port: number, from: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: from });
    let text = '';
    s.setTimeout(10_000, () => s.destroy(new Error(`no banner for ${from}`)));
    s.on('error', reject);
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      const end = text.indexOf('\r\n');
      if (end >= 0) {
        s.end('QUIT\r\n');
        s.destroy();
        resolve(text.slice(0, end));
      }
    });
  });
}

describe('verdict memory through a real HAProxy', { skip: hasHaproxy ? false : 'haproxy not installed (scripts/test-deps.sh)' }, () => {
  let dns: DnsTestServer;
  let server: TestServer;
  let store: SqliteStore;
  let haproxy: TestHaproxy;
  let dir: string;
  let port = 0;
  before(async () => {
    // 127.0.1.5 is listed; the proxy (127.0.0.3) and 127.0.1.6 are not.
    dns = await startDnsServer({ zones: ['zen.test'], records: ['host-record=5.1.0.127.zen.test,127.0.0.2'] });
    dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-proxy-verdicts-'));
    const config = parseConfig([
      '[smtp]', 'proxy_protocol = true',
      '[proxy]', 'trusted = ["127.0.0.3/32"]',
      '[tls]', 'enabled = false',
      '[relay]', 'networks = []',
      '[policy]', 'checks = ["dnsbl"]',
      '[dns]', `servers = ["${dns.server}"]`, 'timeout_ms = 1000', 'tries = 1',
      '[[dnsbl]]', 'zone = "zen.test"',
      '[dnslists]', 'stage = "connect"',
      '',
    ].join('\n'), 'proxy-verdicts.test');
    store = new SqliteStore(path.join(dir, 'state.sqlite'));
    const pipeline = buildPipeline(config, pino({ level: 'silent' }), store);
    assert.ok(pipeline !== null);
    server = await startTestServer(config, { policy: pipeline });
    haproxy = await startHaproxy([{ serverPort: server.port, sendProxy: 'send-proxy-v2', source: '127.0.0.3' }]);
    port = haproxy.ports[0];
  });
  after(async () => {
    await haproxy?.stop();
    await server?.stop();
    store?.close();
    await dns?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the listed client behind the proxy is refused and remembered; the proxy and its other clients are not', async () => {
    assert.match(await banner(port, '127.0.1.5'), /^554 5\.7\.1 .*127\.0\.1\.5/, 'the listed client is refused at connect, named by its own address');
    const queriesAfterFirst = dns.queryCount();
    assert.ok(queriesAfterFirst >= 1, 'the first refusal asked the DNS list');

    const remembered: string[] = [];
    for (const { key } of await store.scan(VERDICT_KEY_PREFIX, 100)) {
      const parsed = parseVerdictKey(key);
      if (parsed !== null) remembered.push(parsed.network);
    }
    assert.deepEqual(remembered, ['127.0.1.5/32'], 'verdict memory holds the real client, not the proxy (127.0.0.3)');

    assert.match(await banner(port, '127.0.1.5'), /^554 5\.7\.1 /, 'the same client again: refused');
    assert.equal(dns.queryCount(), queriesAfterFirst, 'the second refusal came from verdict memory, with no DNS query');
    assert.match(await banner(port, '127.0.1.6'), /^220 /, 'another client behind the same proxy is greeted');
  });
});
