// The DNS list check over a real socket with a real DNS server: a listed client gets the 554
// naming the list at RCPT and no message is spooled; the same client inside relay.networks is
// not looked up at all (the shell decides isRelayClient).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { createDnsClient } from '../../src/dns/resolver.ts';
import { DNSBL_DEFAULTS, dnsblCheck } from '../../src/policy/checks/dnsbl/check.ts';
import { PolicyPipeline } from '../../src/policy/pipeline.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { startTestServer } from '../helpers/server.ts';
import { runSocket } from '../helpers/socket-runner.ts';
import { parseTranscript } from '../helpers/transcript.ts';

const LISTED = `
S: 220 *
C: HELO client.example
S: 250 *
C: MAIL FROM:<news@client.example>
S: 250 2.1.0 Sender ok
C: RCPT TO:<alice@example.test>
S: 554 5.7.1 Service unavailable; client [127.0.0.1] blocked using block.test
C: RSET
S: 250 2.0.0 Reset
C: MAIL FROM:<other@client.example>
S: 250 2.1.0 Sender ok
C: RCPT TO:<bob@example.test>
S: 554 5.7.1 Service unavailable; client [127.0.0.1] blocked using block.test
C: DATA
S: 554 5.5.1 *
@spool-count 0
C: QUIT
S: 221 *
`;

const RELAY = `
S: 220 *
C: HELO client.example
S: 250 *
C: MAIL FROM:<news@client.example>
S: 250 2.1.0 Sender ok
C: RCPT TO:<alice@example.test>
S: 250 2.1.5 Recipient ok
C: QUIT
S: 221 *
`;

async function setup(t: { after: (fn: () => Promise<void>) => void }, relayNetworks: string[], text: string) {
  // The test client connects from 127.0.0.1: list it.
  const dns = await startDnsServer({ zones: ['block.test'], records: ['host-record=1.0.0.127.block.test,127.0.0.2'] });
  t.after(() => dns.stop());
  const check = dnsblCheck({
    ...DNSBL_DEFAULTS,
    lists: [{ zone: 'block.test', weight: 1, answers: [] }],
    dns: createDnsClient({ servers: [dns.server], timeoutMs: 1000, tries: 1 }),
    now: Date.now,
  });
  const pipeline = new PolicyPipeline([check], { log: pino({ level: 'silent' }), defaultTimeoutMs: 1000 });
  const transcript = parseTranscript('dnsbl-socket', text);
  transcript.config.relay.networks = relayNetworks;
  const server = await startTestServer(transcript.config, { policy: pipeline });
  t.after(() => server.stop());
  return { dns, server, transcript };
}

test('dnsbl over a real socket: a listed client is refused at RCPT, naming the list, once per session', async (t) => {
  const { dns, server, transcript } = await setup(t, [], LISTED);
  await runSocket(transcript, server.port, server.spoolDir);
  assert.equal(dns.queryCount(), 1);
});

test('dnsbl over a real socket: a client in relay.networks is not looked up', async (t) => {
  const { dns, server, transcript } = await setup(t, ['127.0.0.0/8'], RELAY);
  await runSocket(transcript, server.port, server.spoolDir);
  assert.equal(dns.queryCount(), 0);
});
