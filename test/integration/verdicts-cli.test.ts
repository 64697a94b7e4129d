// `portcullis verdicts list` and `forget` against a running server with two workers: what verdict
// memory remembers is listed (all, or by network or address), and forgetting a client lifts its
// refusal at once in every worker (the control socket makes them drop their 5 s recall cache),
// while the server runs. The remembered refusals are written to the server's own state store the
// way the pipeline writes them (verdictStoreKey), so the test does not wait for a DNS list's TTL.

import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { verdictStoreKey, type StoredVerdict } from '../../src/policy/verdict-memory.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { SQLITE_STATE_FILE } from '../../src/store/open.ts';
import { runCli, startCliServer, type CliServer } from '../helpers/cli-server.ts';
import { startDnsServer, type DnsTestServer } from '../helpers/dns-server.ts';

let dns: DnsTestServer;
before(async () => {
  // The list answers NXDOMAIN for everyone: only remembered refusals refuse.
  dns = await startDnsServer({ zones: ['zen.test'], records: [] });
});
after(async () => dns.stop());

function banner(port: number, from: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: from });
    let text = '';
    s.setTimeout(10_000, () => s.destroy(new Error('no banner')));
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

function refusal(client: string, atMs: number): StoredVerdict {
  return { action: 'reject', reply: { code: 554, enhanced: '5.7.1', lines: [`Service unavailable; client [${client}] blocked using zen.test`] }, reason: 'listed', at: atMs };
}

test('verdicts list shows what is remembered; verdicts forget lifts it at once in every worker', { timeout: 90_000 }, async (t) => {
  const server: CliServer = await startCliServer({
    workers: 2,
    relayNetworks: [],
    extraToml: `[policy]
checks = ["dnsbl"]
[dns]
servers = ["${dns.server}"]
timeout_ms = 1000
tries = 1
[[dnsbl]]
zone = "zen.test"
[dnslists]
stage = "connect"
`,
  });
  t.after(() => server.stop());
  const store = new SqliteStore(path.join(server.spoolDir, SQLITE_STATE_FILE));
  t.after(() => store.close());
  const at = Date.now();
  await store.set(verdictStoreKey('dnsbl', 'connect', '127.0.0.3/32', ''), JSON.stringify(refusal('127.0.0.3', at)), 3600);
  await store.set(verdictStoreKey('dnsbl', 'connect', '127.0.0.4/32', ''), JSON.stringify(refusal('127.0.0.4', at + 1)), 3600);

  // Several connections, so both workers have read (and cached) the refusal.
  for (let i = 0; i < 6; i++) assert.match(await banner(server.port, '127.0.0.3'), /^554 5\.7\.1 /);
  assert.match(await banner(server.port, '127.0.0.5'), /^220 /, 'a client nobody remembers is greeted');

  const all = await runCli(server.configPath, ['verdicts', 'list']);
  assert.equal(all.code, 0, all.stderr);
  const listing = all.stdout.toString();
  assert.match(listing, /^127\.0\.0\.3\/32 dnsbl\/connect reject since \S+Z until \S+Z\n {4}554 5\.7\.1 Service unavailable; client \[127\.0\.0\.3\] blocked using zen\.test$/m);
  assert.match(listing, /^127\.0\.0\.4\/32 dnsbl\/connect reject/m);
  assert.match(listing, /-- 2 remembered refusals/);
  const one = (await runCli(server.configPath, ['verdicts', 'list', '127.0.0.4'])).stdout.toString();
  assert.doesNotMatch(one, /127\.0\.0\.3/);
  assert.match(one, /-- 1 remembered refusal\n/);
  assert.match((await runCli(server.configPath, ['verdicts', 'list', '127.0.0.0/24'])).stdout.toString(), /-- 2 remembered refusals/);
  assert.equal((await runCli(server.configPath, ['verdicts', 'list', '10.0.0.0/8'])).stdout.toString(), 'nothing remembered\n');

  const bad = await runCli(server.configPath, ['verdicts', 'forget', '127.0.0.3/8']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /host bits set: did you mean 127\.0\.0\.0\/8\?/);
  assert.equal((await runCli(server.configPath, ['verdicts', 'forget'])).code, 2, 'forget needs a target');

  // Refresh the workers' caches, then forget: the next connections must be greeted although the
  // cache would still hold the refusal for up to 5 s.
  for (let i = 0; i < 4; i++) assert.match(await banner(server.port, '127.0.0.3'), /^554 /);
  const refreshedAt = Date.now();
  const forgot = await runCli(server.configPath, ['verdicts', 'forget', '127.0.0.3']);
  assert.equal(forgot.code, 0, forgot.stderr);
  assert.match(forgot.stdout.toString(), /^forgot 1:\n127\.0\.0\.3\/32 dnsbl\/connect reject/);
  assert.match(forgot.stdout.toString(), /the running server dropped its cached lookups/);
  for (let i = 0; i < 6; i++) assert.match(await banner(server.port, '127.0.0.3'), /^220 /, `connection ${i} after forget`);
  const elapsed = Date.now() - refreshedAt;
  t.diagnostic(`greeted ${elapsed} ms after the caches were last refreshed (the recall cache holds 5,000 ms)`);
  assert.match(await banner(server.port, '127.0.0.4'), /^554 /, 'the other client is still remembered');
  assert.equal(await store.get(verdictStoreKey('dnsbl', 'connect', '127.0.0.3/32', '')), null);
  assert.match(server.logText(), /verdicts forgotten by the operator/);
  assert.equal((await runCli(server.configPath, ['verdicts', 'forget', '127.0.0.3'])).stdout.toString(), 'nothing remembered about 127.0.0.3\n');
});
