// Tests for the configuration loader: defaults, round trips, every class of problem, the sample
// file, and that docs/configuration.md carries each key's generated block from CONFIG_KEYS.
// Never writes outside a fresh temporary directory.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderKeyDoc, renderListKeyDoc } from './docs.ts';
import { CONFIG_KEYS, TABLE_KEYS, ConfigError, loadConfig, parseConfig } from './load.ts';
import type { ConfigKey } from './load.ts';
import { defaultConfig } from './types.ts';
import { MAX_BODY_BYTES, MAX_MESSAGE_BYTES, MAX_SEGMENT_BYTES } from '../spool/format.ts';
import type { Config } from './types.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const EXAMPLE = join(REPO, 'examples', 'portcullis.toml');
const DOCS = join(REPO, 'docs', 'configuration.md');

/** The problems parseConfig reports for `text`; fails the test if it parses. */
function problemsOf(text: string): string[] {
  try {
    parseConfig(text, 'test.toml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err.problems;
  }
  assert.fail(`expected problems for:\n${text}`);
}

function valueAt(config: Config, key: ConfigKey): unknown {
  return (config as unknown as Record<string, Record<string, unknown>>)[key.section][key.field];
}

test('an empty file gives the embedded defaults', () => {
  assert.deepEqual(parseConfig('', 'empty.toml'), defaultConfig());
  assert.deepEqual(parseConfig('# only a comment\n\n[smtp]\n', 'comment.toml'), defaultConfig());
});

test('a leading byte order mark is ignored', () => {
  assert.equal(parseConfig('\uFEFF[log]\nlevel = "warn"\n', 'bom.toml').log.level, 'warn');
});

test('the documented defaults, written as TOML, parse back to defaultConfig()', () => {
  const sections = new Map<string, string[]>();
  for (const key of CONFIG_KEYS) {
    sections.set(key.section, [...(sections.get(key.section) ?? []), `${key.key} = ${key.defaultToml}`]);
  }
  const text = [...sections].map(([name, lines]) => `[${name}]\n${lines.join('\n')}\n`).join('\n');
  assert.deepEqual(parseConfig(text, 'defaults.toml'), defaultConfig());
});

// A non-default value for every key: TOML text and the value expected in Config.
const ROUND_TRIP: Record<string, [toml: string, expected: unknown]> = {
  'smtp.listen': [
    '["0.0.0.0:25", "[::]:25", "[2001:db8::1]:587", "Localhost:2525"]',
    [
      { host: '0.0.0.0', port: 25 },
      { host: '::', port: 25 },
      { host: '2001:db8::1', port: 587 },
      { host: 'localhost', port: 2525 },
    ],
  ],
  'smtp.hostname': ['"mx.example.test"', 'mx.example.test'],
  'smtp.max_message_bytes': ['52428800', 52_428_800],
  'smtp.body_memory_bytes': ['65536', 65_536],
  'smtp.body_memory_budget_bytes': ['134217728', 134_217_728],
  'smtp.workers': ['4', 4],
  'smtp.max_command_line_bytes': ['2048', 2048],
  'smtp.max_text_line_bytes': ['4096', 4096],
  'smtp.max_recipients': ['500', 500],
  'smtp.max_errors': ['3', 3],
  'smtp.max_transactions': ['20', 20],
  'smtp.allow_empty_helo': ['true', true],
  'smtp.vrfy': ['"disabled"', 'disabled'],
  'smtp.expn': ['"252"', '252'],
  'smtp.bare_line_endings': ['"normalize"', 'normalize'],
  'smtp.command_timeout_seconds': ['600', 600],
  'smtp.data_timeout_seconds': ['600', 600],
  'smtp.stop_grace_seconds': ['5', 5],
  'smtp.proxy_protocol': ['true', true],
  'proxy.trusted': ['["10.0.0.5", "2001:DB8::/64"]', ['10.0.0.5/32', '2001:db8::/64']],
  'proxy.header_timeout_seconds': ['2', 2],
  'access.allow': ['["10.0.0.0/8"]', ['10.0.0.0/8']],
  'access.block': ['["192.0.2.0/24", "2001:db8::1"]', ['192.0.2.0/24', '2001:db8::1/128']],
  'access.block_file': ['"blocked.txt"', 'blocked.txt'],
  'limits.max_connections': ['500', 500],
  'limits.max_connections_per_ip': ['5', 5],
  'limits.max_connections_per_network': ['50', 50],
  'limits.connection_rate_per_ip': ['"10/30s"', { count: 10, windowSeconds: 30 }],
  'limits.connection_rate_shared': ['true', true],
  'limits.refused_session_seconds': ['20', 20],
  'pregreet.enabled': ['true', true],
  'pregreet.wait_seconds': ['2', 2],
  'pregreet.action': ['"disconnect"', 'disconnect'],
  'pregreet.pass_ttl_seconds': ['3600', 3600],
  'pregreet.remember_seconds': ['0', 0],
  'limits.refused_session_commands': ['3', 3],
  'limits.max_refused_sessions': ['0', 0],
  'limits.command_deadline_seconds': ['30', 30],
  'limits.min_data_rate_bytes': ['2048', 2048],
  'limits.min_data_rate_window_seconds': ['30', 30],
  'limits.session_max_seconds': ['600', 600],
  'limits.max_idle_commands': ['50', 50],
  'limits.stress_on_percent': ['80', 80],
  'limits.stress_off_percent': ['60', 60],
  'limits.stress_timeout_seconds': ['20', 20],
  'tarpit.free_errors': ['5', 5],
  'tarpit.initial_delay_ms': ['500', 500],
  'tarpit.max_delay_seconds': ['10', 10],
  'tarpit.remember_seconds': ['0', 0],
  'queue.max_lifetime': ['"2d"', 2 * 86_400],
  'queue.delay_warning': ['"0s"', 0],
  'queue.min_backoff': ['"1m"', 60],
  'queue.max_backoff': ['"2h"', 7_200],
  'queue.destination_concurrency': ['5', 5],
  'tls.cert': ['"tls/cert.pem"', 'tls/cert.pem'],
  'tls.key': ['"tls/key.pem"', 'tls/key.pem'],
  'tls.enabled': ['false', false],
  'tls.ciphers': ['"ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256"', 'ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256'],
  'tls.handshake_timeout_seconds': ['30', 30],
  'domains.local': ['["Example.TEST", "mail.example.test", "example.test"]', ['example.test', 'mail.example.test']],
  'relay.networks': ['["192.0.2.0/24", "2001:DB8::/32", "198.51.100.7", "::1"]', ['192.0.2.0/24', '2001:db8::/32', '198.51.100.7/32', '::1/128']],
  'spool.dir': ['"/srv/portcullis/spool"', '/srv/portcullis/spool'],
  'spool.journal_max_message_bytes': ['0', 0],
  'spool.segment_max_bytes': ['1048576', 1_048_576],
  'spool.min_free_bytes': ['0', 0],
  'recipients.table': ['"recipients.txt"', 'recipients.txt'],
  'recipients.addresses': ['["Alice@Example.TEST", "@example.org"]', ['alice@example.test', '@example.org']],
  'verdicts.max_refusals_per_session': ['5', 5],
  'state.store': ['"redis://127.0.0.1:6390/0"', 'redis://127.0.0.1:6390/0'],
  'greylist.enabled': ['true', true],
  'greylist.delay_seconds': ['60', 60],
  'greylist.stage': ['"data"', 'data'],
  'batv.domains': ['["Example.TEST"]', ['example.test']],
  'batv.keys': ['[{ id = 1, secret_file = "new.key" }, { id = 0, secret_file = "batv.key" }]', [{ id: 1, secretFile: 'new.key' }, { id: 0, secretFile: 'batv.key' }]],
  'batv.max_age': ['"10d"', 864_000],
  'clamd.address': ['"[::1]:3310"', { kind: 'tcp', host: '::1', port: 3310 }],
  'clamd.on_failure': ['"accept"', 'accept'],
  'clamd.connect_timeout_seconds': ['3', 3],
  'clamd.command_timeout_seconds': ['20', 20],
  'clamd.stream_max_bytes': ['104857600', 104_857_600],
  'clamd.remember_seconds': ['0', 0],
  'spamd.address': ['"/run/spamd.sock"', { kind: 'unix', path: '/run/spamd.sock' }],
  'spamd.on_failure': ['"accept"', 'accept'],
  'spamd.connect_timeout_seconds': ['3', 3],
  'spamd.command_timeout_seconds': ['20', 20],
  'spamd.max_message_bytes': ['2097152', 2_097_152],
  'spamd.add_header_score': ['4.5', 4.5],
  'spamd.tempfail_score': ['9', 9],
  'spamd.reject_score': ['"off"', null],
  'rspamd.url': ['"https://rspamd.example.test:11333/scan/"', 'https://rspamd.example.test:11333/scan'],
  'rspamd.on_failure': ['"accept"', 'accept'],
  'rspamd.timeout_seconds': ['10', 10],
  'rspamd.max_message_bytes': ['1048576', 1_048_576],
  'rspamd.add_header_score': ['5.5', 5.5],
  'rspamd.tempfail_score': ['8', 8],
  'rspamd.reject_score': ['"off"', null],
  'rspamd.use_scanner_action': ['true', true],
  'batv.exceptions': ['["Lists@example.test"]', ['lists@example.test']],
  'batv.action': ['"tag"', 'tag'],
  'verdicts.ipv4_prefix': ['32', 32],
  'verdicts.ipv6_prefix': ['48', 48],
  'policy.checks': ['["greylist", "spf", "helo", "recipients", "batv", "clamd", "spamd", "rspamd", "authentication"]', ['greylist', 'spf', 'helo', 'recipients', 'batv', 'clamd', 'spamd', 'rspamd', 'authentication']],
  'dns.servers': ['["127.0.0.1:5353", "[::1]:53", "192.0.2.53"]', ['127.0.0.1:5353', '[::1]:53', '192.0.2.53']],
  'dns.timeout_ms': ['500', 500],
  'dns.tries': ['3', 3],
  'dnslists.threshold': ['3', 3],
  'dnslists.allow_threshold': ['-2', -2],
  'dnslists.stage': ['"connect"', 'connect'],
  'dnslists.action': ['"tempfail"', 'tempfail'],
  'dnslists.negative_cache_seconds': ['0', 0],
  'spf.enabled': ['true', true],
  'spf.header': ['"authentication-results"', 'authentication-results'],
  'spf.fail': ['"tempfail"', 'tempfail'],
  'spf.softfail': ['"reject"', 'reject'],
  'spf.neutral': ['"tempfail"', 'tempfail'],
  'spf.none': ['"reject"', 'reject'],
  'spf.temperror': ['"continue"', 'continue'],
  'spf.permerror': ['"reject"', 'reject'],
  'dkim.enabled': ['true', true],
  'arc.enabled': ['true', true],
  'dmarc.enabled': ['true', true],
  'dmarc.enforce': ['true', true],
  'dmarc.quarantine_action': ['"quarantine"', 'quarantine'],
  'helo.require_fqdn': ['true', true],
  'helo.require_resolvable': ['true', true],
  'helo.reject_our_name': ['true', true],
  'metrics.listen': ['"127.0.0.1:9425"', { host: '127.0.0.1', port: 9425 }],
  'routes.default': ['{ via = "smtp:[Relay.Example]:587", tls = "required" }', { kind: 'smtp', host: 'relay.example', port: 587, tls: 'required' }],
  'routes.local': ['"lmtp:127.0.0.1:24"', { kind: 'lmtp', host: '127.0.0.1', port: 24 }],
  'log.level': ['"debug"', 'debug'],
  'log.format': ['"pretty"', 'pretty'],
};

test('every key round-trips a non-default value', () => {
  assert.deepEqual(Object.keys(ROUND_TRIP).sort(), CONFIG_KEYS.map((k) => k.path).sort(), 'ROUND_TRIP must cover every key');
  const sections = new Map<string, string[]>();
  for (const key of CONFIG_KEYS) {
    sections.set(key.section, [...(sections.get(key.section) ?? []), `${key.key} = ${ROUND_TRIP[key.path][0]}`]);
  }
  const text = [...sections].map(([name, lines]) => `[${name}]\n${lines.join('\n')}\n`).join('\n');
  const config = parseConfig(text, 'all.toml');
  for (const key of CONFIG_KEYS) {
    const expected = ROUND_TRIP[key.path][1];
    assert.deepEqual(valueAt(config, key), expected, key.path);
    assert.notDeepEqual(valueAt(defaultConfig(), key), expected, `${key.path}: pick a value that is not the default`);
  }
});

test('keys left out keep their defaults, also within a section that is present', () => {
  const config = parseConfig('[smtp]\nmax_errors = 3\n', 'partial.toml');
  assert.deepEqual(config, { ...defaultConfig(), smtp: { ...defaultConfig().smtp, maxErrors: 3 } });
});

test('"auto" and dotted keys are accepted', () => {
  assert.equal(parseConfig('smtp.workers = "auto"\n', 'dotted.toml').smtp.workers, 'auto');
  assert.deepEqual(parseConfig('relay = { networks = [] }\n', 'inline.toml').relay.networks, []);
  assert.deepEqual(parseConfig('[domains]\nlocal = []\n', 'none.toml').domains.local, []);
});

test('wrong type names the key, the value and what is allowed', () => {
  assert.deepEqual(problemsOf('[smtp]\nmax_errors = "10"\n'), [
    'smtp.max_errors = "10": must be an integer from 1 to 1000, not a string',
  ]);
  assert.deepEqual(problemsOf('[smtp]\nmax_message_bytes = 1.5\n'), [
    'smtp.max_message_bytes = 1.5: must be an integer from 1024 (1 KiB) to 1072693248 (1023 MiB), not a float',
  ]);
  assert.deepEqual(problemsOf('[tls]\nenabled = "yes"\n'), ['tls.enabled = "yes": must be true or false, not a string']);
  assert.deepEqual(problemsOf('[smtp]\nvrfy = 252\n'), [
    'smtp.vrfy = 252: must be one of "252", "disabled" (a string: write "252" in quotes)',
  ]);
  assert.deepEqual(problemsOf('[log]\nlevel = "verbose"\n'), [
    'log.level = "verbose": must be one of "trace", "debug", "info", "warn", "error", "fatal", "silent"',
  ]);
  assert.deepEqual(problemsOf('[smtp]\nworkers = 0\n'), ['smtp.workers = 0: must be "auto" or an integer from 1 to 64']);
  assert.deepEqual(problemsOf('[smtp]\nlisten = "127.0.0.1:25"\n'), [
    'smtp.listen = "127.0.0.1:25": must be an array of "host:port" strings, e.g. ["127.0.0.1:2525"]',
  ]);
  assert.deepEqual(problemsOf('smtp = 3\n'), ['smtp = 3: must be a table: write the keys under a [smtp] header']);
  assert.deepEqual(problemsOf('[spool]\ndir = ""\n'), ['spool.dir = "": must not be empty']);
});

test('out of range cites the RFC minimum where one applies', () => {
  assert.deepEqual(problemsOf('[smtp]\nmax_command_line_bytes = 100\n'), [
    'smtp.max_command_line_bytes = 100: must be an integer >= 512 (RFC 5321 4.5.3.1.4)',
  ]);
  assert.deepEqual(problemsOf('[smtp]\nmax_text_line_bytes = 999\n'), [
    'smtp.max_text_line_bytes = 999: must be an integer >= 1000 (RFC 5321 4.5.3.1.6)',
  ]);
  assert.deepEqual(problemsOf('[smtp]\nmax_recipients = 99\n'), [
    'smtp.max_recipients = 99: must be an integer >= 100 (RFC 5321 4.5.3.1.8)',
  ]);
  assert.deepEqual(problemsOf('[smtp]\ncommand_timeout_seconds = 60\n'), [
    'smtp.command_timeout_seconds = 60: must be an integer >= 300 (RFC 5321 4.5.3.2.7)',
  ]);
  assert.deepEqual(problemsOf('[smtp]\ndata_timeout_seconds = 179\n'), [
    'smtp.data_timeout_seconds = 179: must be an integer >= 180 (RFC 5321 4.5.3.2.5)',
  ]);
  assert.deepEqual(problemsOf('[smtp]\nmax_command_line_bytes = 65537\n'), [
    'smtp.max_command_line_bytes = 65537: must be an integer <= 65536 (64 KiB)',
  ]);
  assert.deepEqual(problemsOf('[spool]\nsegment_max_bytes = 1000\n'), [
    'spool.segment_max_bytes = 1000: must be an integer >= 1048576 (1 MiB)',
  ]);
});

test('unknown keys and sections suggest the nearest known name', () => {
  assert.deepEqual(problemsOf('[smtp]\nlistne = ["127.0.0.1:25"]\n'), ['unknown key "smtp.listne" (did you mean "smtp.listen"?)']);
  assert.deepEqual(problemsOf('[smtp]\nmaxMessageBytes = 1024\n'), [
    'unknown key "smtp.maxMessageBytes" (did you mean "smtp.max_message_bytes"?)',
  ]);
  assert.deepEqual(problemsOf('[smtp]\ncert = "a.pem"\n'), ['unknown key "smtp.cert" (did you mean "tls.cert"?)']);
  assert.deepEqual(problemsOf('hostname = "mx.example.test"\n[smtp]\n'), [
    'unknown key "hostname" (did you mean "smtp.hostname"?)',
  ]);
  assert.deepEqual(problemsOf('[smpt]\nhostname = "a.example"\n'), ['unknown section "[smpt]" (did you mean "[smtp]"?)']);
  assert.deepEqual(problemsOf('[smtp]\ncolour = "blue"\n'), ['unknown key "smtp.colour"']);
  assert.deepEqual(problemsOf('[monitoring]\nport = 9100\n'), ['unknown section "[monitoring]"']);
  assert.deepEqual(problemsOf('[smtp.limits]\nx = 1\n'), ['unknown key "smtp.limits"']);
});

test('bad relay networks say what is wrong', () => {
  assert.deepEqual(problemsOf('[relay]\nnetworks = ["10.0.0.0/33", "nope", "10.1.2.3/8", "2001:db8::1/32", "0.0.0.0/0", "::/0"]\n'), [
    'relay.networks[0] = "10.0.0.0/33": prefix "/33" must be an integer from 1 to 32',
    'relay.networks[1] = "nope": is not an IP address or CIDR network, e.g. "192.0.2.0/24" or "2001:db8::/32"',
    'relay.networks[2] = "10.1.2.3/8": has host bits set: write "10.0.0.0/8" for the network, or "10.1.2.3" for one host',
    'relay.networks[3] = "2001:db8::1/32": has host bits set: write "2001:db8::/32" for the network, or "2001:db8::1" for one host',
    'relay.networks[4] = "0.0.0.0/0": a /0 network would let every client relay (an open relay)',
    'relay.networks[5] = "::/0": a /0 network would let every client relay (an open relay)',
  ]);
  assert.deepEqual(problemsOf('[relay]\nnetworks = ["fe80::1%eth0/64", "10.0.0.0/", 7]\n'), [
    'relay.networks[0] = "fe80::1%eth0/64": is not an IP address or CIDR network, e.g. "192.0.2.0/24" or "2001:db8::/32"',
    'relay.networks[1] = "10.0.0.0/": prefix "/" must be an integer from 1 to 32',
    'relay.networks[2] = 7: must be a CIDR string, not an integer',
  ]);
});

test('relay networks accept IPv4-mapped and embedded-IPv4 forms', () => {
  const config = parseConfig('[relay]\nnetworks = ["::ffff:10.0.0.0/104", "64:ff9b::/96", "::ffff:192.0.2.1"]\n', 'v6.toml');
  assert.deepEqual(config.relay.networks, ['::ffff:10.0.0.0/104', '64:ff9b::/96', '::ffff:192.0.2.1/128']);
  assert.deepEqual(problemsOf('[relay]\nnetworks = ["::ffff:10.0.0.1/100"]\n'), [
    'relay.networks[0] = "::ffff:10.0.0.1/100": has host bits set: write "::ffff:0:0/100" for the network, or "::ffff:10.0.0.1" for one host',
  ]);
});

test('bad listen addresses say what is wrong', () => {
  assert.deepEqual(
    problemsOf('[smtp]\nlisten = ["::1:25", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "[127.0.0.1]:25", ":25", "*:25", 25]\n'),
    [
      'smtp.listen[0] = "::1:25": an IPv6 address goes in brackets, e.g. "[::1]:2525"',
      'smtp.listen[1] = "127.0.0.1": must be "host:port", e.g. "127.0.0.1:2525" or "[::1]:2525"',
      'smtp.listen[2] = "127.0.0.1:0": port "0" must be an integer from 1 to 65535',
      'smtp.listen[3] = "127.0.0.1:65536": port "65536" must be an integer from 1 to 65535',
      'smtp.listen[4] = "[127.0.0.1]:25": "[127.0.0.1]" must hold an IPv6 address',
      'smtp.listen[5] = ":25": has no host: use "0.0.0.0:PORT" for every IPv4 address, "[::]:PORT" for IPv6',
      'smtp.listen[6] = "*:25": host "*" is not an IP address or host name: label "*" is not valid: use letters, digits and inner hyphens, at most 63 characters',
      'smtp.listen[7] = 25: must be a "host:port" string, not an integer',
    ],
  );
  assert.deepEqual(problemsOf('[smtp]\nlisten = []\n'), ['smtp.listen = []: must list at least one "host:port"']);
  assert.deepEqual(problemsOf('[smtp]\nlisten = ["127.0.0.1:25", "[::1]:25", "127.0.0.1:25"]\n'), [
    'smtp.listen[2] = "127.0.0.1:25": same address as smtp.listen[0]',
  ]);
});

test('domain names: lowercased, no trailing dot, A-labels only', () => {
  assert.deepEqual(problemsOf('[smtp]\nhostname = "mx.example.test."\n'), [
    'smtp.hostname = "mx.example.test.": must not end with a dot: write "mx.example.test"',
  ]);
  assert.deepEqual(problemsOf('[domains]\nlocal = ["bücher.example", "a..b", "-a.example", "192.0.2.1", ""]\n'), [
    'domains.local[0] = "bücher.example": must be ASCII: write the A-label form "xn--bcher-kva.example"',
    'domains.local[1] = "a..b": must not have an empty label (two dots in a row, or a leading dot)',
    'domains.local[2] = "-a.example": label "-a" is not valid: use letters, digits and inner hyphens, at most 63 characters',
    'domains.local[3] = "192.0.2.1": must be a domain name, not an IP address',
    'domains.local[4] = "": must not be empty',
  ]);
});

test('tls.ciphers is checked by OpenSSL; proxy.trusted refuses /0 and is required by smtp.proxy_protocol', () => {
  assert.match(problemsOf('[tls]\nciphers = "NO-SUCH-CIPHER"\n')[0], /^tls\.ciphers = "NO-SUCH-CIPHER": OpenSSL does not accept it/);
  assert.deepEqual(problemsOf('[tls]\nciphers = ""\n'), ['tls.ciphers = "": must be a non-empty OpenSSL cipher list']);
  assert.deepEqual(problemsOf('[proxy]\ntrusted = ["0.0.0.0/0"]\n'), ['proxy.trusted[0] = "0.0.0.0/0": a /0 network would let every client on the Internet choose the address it is seen as']);
  assert.match(problemsOf('[proxy]\ntrusted = ["10.1.2.3/8"]\n')[0], /has host bits set/);
  assert.deepEqual(problemsOf('[smtp]\nproxy_protocol = true\n'), [
    'smtp.proxy_protocol = true: proxy.trusted must list the load balancers allowed to send the header (every other connection is closed)',
  ]);
  assert.deepEqual(parseConfig('[smtp]\nproxy_protocol = true\n[proxy]\ntrusted = ["127.0.0.1"]\n', 'ok.toml').proxy.trusted, ['127.0.0.1/32']);
});

test('tls.cert and tls.key: both or neither', () => {
  assert.deepEqual(problemsOf('[tls]\ncert = "cert.pem"\n'), ['tls.cert = "cert.pem": tls.key must be set too (set both or neither)']);
  assert.deepEqual(problemsOf('[tls]\nkey = "key.pem"\n'), ['tls.key = "key.pem": tls.cert must be set too (set both or neither)']);
  // An invalid tls.key is reported once, not again as "missing".
  assert.deepEqual(problemsOf('[tls]\ncert = "cert.pem"\nkey = 3\n'), ['tls.key = 3: must be a string (a path), not an integer']);
});

test('the journal threshold may not exceed the segment size', () => {
  assert.deepEqual(problemsOf('[spool]\njournal_max_message_bytes = 2097152\nsegment_max_bytes = 1048576\n'), [
    'spool.journal_max_message_bytes = 2097152: must not exceed spool.segment_max_bytes (1048576)',
  ]);
});

test('the body budget holds at least one session\'s body in memory', () => {
  assert.deepEqual(problemsOf('[smtp]\nbody_memory_bytes = 2097152\nbody_memory_budget_bytes = 1048576\n'), [
    'smtp.body_memory_budget_bytes = 1048576: must be at least smtp.body_memory_bytes (2097152)',
  ]);
  assert.equal(parseConfig('[smtp]\nbody_memory_bytes = 2097152\nbody_memory_budget_bytes = 2097152\n', 't.toml').smtp.bodyMemoryBudgetBytes, 2_097_152);
  // An invalid body_memory_bytes is reported once, not again against the budget.
  assert.deepEqual(problemsOf('[smtp]\nbody_memory_bytes = 1\nbody_memory_budget_bytes = 65536\n').length, 1);
});

test('a shared connection rate needs a Redis state store', () => {
  assert.deepEqual(problemsOf('[limits]\nconnection_rate_shared = true\n'), [
    'limits.connection_rate_shared = true: state.store must be a Redis URL ("redis://host:port/db") shared by the nodes, not "sqlite" ' +
      '(each node\'s own store, whose count is already exact for the node): set state.store or leave connection_rate_shared false',
  ]);
  const cfg = parseConfig('[limits]\nconnection_rate_shared = true\n[state]\nstore = "redis://127.0.0.1:6379/0"\n', 't.toml');
  assert.equal(cfg.limits.connectionRateShared, true);
  assert.equal(parseConfig('[limits]\nconnection_rate_shared = false\n', 't.toml').limits.connectionRateShared, false);
  assert.match(problemsOf('[limits]\nconnection_rate_shared = "yes"\n')[0]!, /^limits\.connection_rate_shared/);
});

test('limits agree with the spool: no message SIZE allows that the spool refuses, no segment the reader cannot read', () => {
  // The spool stores bodies up to MAX_BODY_BYTES, our own header fields included; fs.readFile
  // (the reader's) refuses files over 2 GiB, and a segment ends past its limit by one record.
  assert.ok(MAX_MESSAGE_BYTES < MAX_BODY_BYTES);
  assert.ok(MAX_SEGMENT_BYTES + 2 ** 26 + 2 ** 24 < 2 ** 31 - 1);
  assert.equal(parseConfig(`[smtp]\nmax_message_bytes = ${MAX_MESSAGE_BYTES}\n`, 't.toml').smtp.maxMessageBytes, MAX_MESSAGE_BYTES);
  assert.equal(parseConfig(`[spool]\nsegment_max_bytes = ${MAX_SEGMENT_BYTES}\n`, 't.toml').spool.segmentMaxBytes, MAX_SEGMENT_BYTES);
  assert.deepEqual(problemsOf(`[smtp]\nmax_message_bytes = ${MAX_MESSAGE_BYTES + 1}\n`), [
    'smtp.max_message_bytes = 1072693249: must be an integer <= 1072693248 (1023 MiB): the largest message the spool stores, ' +
      'less room for the header fields the server adds',
  ]);
  assert.deepEqual(problemsOf('[smtp]\nmax_message_bytes = 2147483648\n'), [
    'smtp.max_message_bytes = 2147483648: must be an integer <= 1072693248 (1023 MiB): the largest message the spool stores, ' +
      'less room for the header fields the server adds',
  ]);
  assert.deepEqual(problemsOf('[spool]\nsegment_max_bytes = 4294967296\n'), [
    'spool.segment_max_bytes = 4294967296: must be an integer <= 1073741824 (1 GiB): the largest segment the spool reader reads back',
  ]);
});

test('a TOML syntax error gives line and column', () => {
  assert.deepEqual(problemsOf('[smtp]\nhostname = "a.example"\nmax_errors = = 3\n'), [
    'TOML syntax error at line 3, column 14: invalid value',
  ]);
  const [duplicate] = problemsOf('[smtp]\nmax_errors = 3\nmax_errors = 4\n');
  assert.match(duplicate, /^TOML syntax error at line 3, column \d+: /);
});

test('all problems are reported, in file order, in one ConfigError', () => {
  const text = [
    '[smtp]',
    'listne = ["127.0.0.1:25"]',
    'max_command_line_bytes = 100',
    'vrfy = "yes"',
    '[smpt]',
    '[relay]',
    'networks = ["10.0.0.1/8"]',
    '[tls]',
    'cert = "cert.pem"',
  ].join('\n');
  let error: unknown;
  try {
    parseConfig(text, 'many.toml');
  } catch (err) {
    error = err;
  }
  assert.ok(error instanceof ConfigError);
  assert.ok(error instanceof Error);
  assert.equal(error.code, 'PORTCULLIS_CONFIG');
  assert.equal(error.source, 'many.toml');
  assert.deepEqual(error.problems, [
    'unknown key "smtp.listne" (did you mean "smtp.listen"?)',
    'smtp.max_command_line_bytes = 100: must be an integer >= 512 (RFC 5321 4.5.3.1.4)',
    'smtp.vrfy = "yes": must be one of "252", "disabled"',
    'unknown section "[smpt]" (did you mean "[smtp]"?)',
    'relay.networks[0] = "10.0.0.1/8": has host bits set: write "10.0.0.0/8" for the network, or "10.0.0.1" for one host',
    'tls.cert = "cert.pem": tls.key must be set too (set both or neither)',
  ]);
  assert.equal(error.message, `many.toml: 6 problems:\n  ${error.problems.join('\n  ')}`);
});

test('a long or hostile value is shown escaped and bounded', () => {
  const [problem] = problemsOf(`[smtp]\nhostname = "${'a'.repeat(300)}\\u001b[2J"\n`);
  assert.ok(!problem.includes('\u001b'), 'control characters are escaped');
  assert.ok(problem.length < 200, problem);
});

test('loadConfig without a path serves the embedded default, paths pinned to the working directory', () => {
  const cwd = resolve('some', 'dir');
  const config = loadConfig(undefined, { cwd });
  const expected = defaultConfig();
  expected.spool.dir = resolve(cwd, 'var/spool');
  expected.routes.local = { kind: 'maildir', path: resolve(cwd, 'var/maildir') };
  assert.deepEqual(config, expected);
  assert.deepEqual(config.smtp.listen, [{ host: '127.0.0.1', port: 2525 }]);
});

test('loadConfig resolves the file, spool.dir, tls.cert and tls.key against the working directory', () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-config-'));
  try {
    mkdirSync(join(dir, 'etc'));
    writeFileSync(
      join(dir, 'etc', 'p.toml'),
      '[spool]\ndir = "spool"\n[tls]\ncert = "tls/c.pem"\nkey = "/abs/k.pem"\n',
    );
    const config = loadConfig('etc/p.toml', { cwd: dir });
    assert.equal(config.spool.dir, join(dir, 'spool'));
    assert.equal(config.tls.certFile, join(dir, 'tls', 'c.pem'));
    assert.equal(config.tls.keyFile, resolve('/abs/k.pem'));
    // Empty means "no file", not "the working directory".
    assert.equal(loadConfig(undefined, { cwd: dir }).tls.certFile, '');

    writeFileSync(join(dir, 'bad.toml'), Buffer.from([0x5b, 0x6c, 0x6f, 0x67, 0x5d, 0x0a, 0xff, 0x0a]));
    assert.throws(() => loadConfig('bad.toml', { cwd: dir }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, ['cannot read "bad.toml": not valid UTF-8']);
      return true;
    });
    assert.throws(() => loadConfig('etc', { cwd: dir }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, ['cannot read "etc": not a regular file']);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('loadConfig names the path it cannot read', () => {
  assert.throws(() => loadConfig('no/such/portcullis.toml'), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.code, 'PORTCULLIS_CONFIG');
    assert.equal(err.problems.length, 1);
    assert.match(err.problems[0], /^cannot read "no\/such\/portcullis\.toml": ENOENT/);
    assert.match(err.message, /^no\/such\/portcullis\.toml: /);
    return true;
  });
});

test('examples/portcullis.toml parses and shows every key', () => {
  const text = readFileSync(EXAMPLE, 'utf8');
  const config = parseConfig(text, 'examples/portcullis.toml');
  assert.equal(config.smtp.hostname, 'mx.example.test');
  assert.deepEqual(config.domains.local, ['example.test']);
  assert.deepEqual(config.relay.networks, ['127.0.0.0/8', '::1/128']);
  assert.equal(config.spool.dir, 'var/spool');
  for (const key of [...CONFIG_KEYS, ...TABLE_KEYS]) {
    assert.match(text, new RegExp(`^(# )?${key.key} = `, 'm'), `${key.path} is missing from the example`);
  }
  assert.deepEqual(loadConfig(EXAMPLE).relay.networks, ['127.0.0.0/8', '::1/128']);
});

test('docs/configuration.md documents every key with its default, generated from CONFIG_KEYS', () => {
  const docs = readFileSync(DOCS, 'utf8');
  for (const key of CONFIG_KEYS) {
    const block = renderKeyDoc(key);
    assert.ok(docs.includes(block), `docs/configuration.md must contain, verbatim:\n\n${block}\n`);
  }
  for (const key of TABLE_KEYS) {
    const block = renderListKeyDoc(key);
    assert.ok(docs.includes(block), `docs/configuration.md must contain, verbatim:\n\n${block}\n`);
  }
  const known = new Set([...CONFIG_KEYS, ...TABLE_KEYS].map((k) => k.path));
  const documented = [...docs.matchAll(/^### `([^`]+)`$/gm)].map((m) => m[1]);
  assert.deepEqual(documented.filter((path) => !known.has(path)), [], 'docs describe keys the loader does not know');
});

test('[[dnsbl]] tables: defaults, order, and each problem named by its index', () => {
  const config = parseConfig(
    '[[dnsbl]]\nzone = "Zen.Example"\nweight = 2\n\n[[dnsbl]]\nzone = "list.example"\nanswers = ["127.0.0.[2..11]", "127.0.[0;1].[4;9..10]"]\n\n[[dnsbl]]\nzone = "wl.example"\nweight = -3\n',
    'dnsbl.toml',
  );
  // One zone twice with other answers and weights (trust levels) is fine.
  assert.equal(parseConfig('[[dnsbl]]\nzone = "wl.example"\nanswers = ["127.0.[0..255].1"]\nweight = -1\n[[dnsbl]]\nzone = "wl.example"\nanswers = ["127.0.[0..255].3"]\nweight = -5\n', 'trust.toml').dnsbl.length, 2);
  assert.deepEqual(config.dnsbl, [
    { zone: 'zen.example', weight: 2, answers: [] },
    { zone: 'list.example', weight: 1, answers: ['127.0.0.[2..11]', '127.0.[0;1].[4;9..10]'] },
    { zone: 'wl.example', weight: -3, answers: [] },
  ]);
  assert.throws(
    () => parseConfig('[[dnsbl]]\nweight = 2\n[[dnsbl]]\nzone = "a.example"\nweigth = 1\n[[dnsbl]]\nzone = "a.example"\n[[dnsbl]]\nzone = "b.example"\nweight = 0\nanswers = ["127.0.0.[11..2]", "127.0.0", "300.0.0.1", "127.0.0.[a..b]"]\n', 'bad.toml'),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [
        'dnsbl[0]: zone must be set, e.g. zone = "zen.example"',
        'unknown key "dnsbl[1].weigth" (did you mean "dnsbl[1].weight"?)',
        'dnsbl[2].zone = "a.example": already listed with the same answers as dnsbl[1]',
        'dnsbl[3].weight = 0: must not be 0 (a list that never counts); remove the [[dnsbl]] table instead',
        'dnsbl[3].answers[0] = "127.0.0.[11..2]": octet 4 "[11..2]": the range [11..2] is empty (its start is above its end)',
        'dnsbl[3].answers[1] = "127.0.0": needs four octets separated by dots, found 3',
        'dnsbl[3].answers[2] = "300.0.0.1": octet 1 "300": 300 is above 255',
        'dnsbl[3].answers[3] = "127.0.0.[a..b]": octet 4 "[a..b]": "a" is not a number, an [a..b] range or an [a;b;c] list',
      ]);
      return true;
    },
  );
  assert.throws(() => parseConfig('[dnsbl]\nzone = "a.example"\n', 'single.toml'), /write each list under its own \[\[dnsbl\]\] header/);
});

test('policy checks: names, duplicates, and a configured check left out of the list', () => {
  assert.throws(() => parseConfig('[policy]\nchecks = ["greylst", "spf", "spf"]\n', 'p.toml'), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.problems, [
      'policy.checks[0] = "greylst": must be one of "recipients", "helo", "dnsbl", "spf", "greylist", "batv", "clamd", "spamd", "rspamd", "authentication", "milter" (did you mean "greylist"?)',
    ]);
    return true;
  });
  assert.throws(() => parseConfig('[policy]\nchecks = ["spf", "spf"]\n', 'p.toml'), /policy.checks\[1\] = "spf": already listed as policy.checks\[0\]/);
  assert.throws(
    () => parseConfig('[policy]\nchecks = ["spf"]\n[greylist]\nenabled = true\n', 'p.toml'),
    /policy.checks = \["spf"\]: greylist.enabled = true, so list "greylist" too \(or turn it off\)/,
  );
});

test('dns servers, metrics listen and allow threshold say what is wrong', () => {
  assert.throws(() => parseConfig('[dns]\nservers = ["ns.example", "127.0.0.1:99999", "[::1]"]\n', 'd.toml'), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.problems.length, 3);
    assert.match(err.problems[0], /^dns.servers\[0\] = "ns.example": must be an IP address/);
    assert.match(err.problems[1], /port "99999" must be an integer from 1 to 65535/);
    return true;
  });
  assert.deepEqual(parseConfig('[dns]\nservers = ["::1"]\n', 'd.toml').dns.servers, ['::1']);
  assert.throws(() => parseConfig('[metrics]\nlisten = "9425"\n', 'm.toml'), /metrics.listen = "9425": must be "host:port"/);
  assert.equal(parseConfig('[metrics]\nlisten = ""\n', 'm.toml').metrics.listen, null);
  assert.throws(() => parseConfig('[dnslists]\nallow_threshold = 1\n', 't.toml'), /allow_threshold = 1: must be an integer from -1000 to -1, or "off"/);
});

test('dns.timeout_ms x 2^dns.tries is bounded so every check answers within the session limit', () => {
  assert.equal(parseConfig('[dns]\ntimeout_ms = 3000\ntries = 3\n', 'ok.toml').dns.tries, 3);
  assert.throws(
    () => parseConfig('[dns]\ntimeout_ms = 30000\ntries = 2\n', 'slow.toml'),
    /dns.timeout_ms = 30000, dns.tries = 2: an unanswered query would wait about 120000 ms .* at most 30000/,
  );
});

test('what the loader accepts, the checks build: one-label DNS-list zones refused; "#" in a TOML address kept', async () => {
  assert.throws(() => parseConfig('[[dnsbl]]\nzone = "localbl"\n', 'z.toml'), /dnsbl\[0\].zone = "localbl": must have two or more labels/);
  const { buildPipeline } = await import('../policy/build.ts');
  const { pino } = await import('pino');
  const cfg = parseConfig('[domains]\nlocal = ["example.test"]\n[recipients]\naddresses = ["a#b@example.test"]\n[[dnsbl]]\nzone = "bl.example"\n', 'ok.toml');
  assert.ok(buildPipeline(cfg, pino({ level: 'silent' })) !== null);
});

test('[[listener]] tables: parsed with defaults, each problem named by its index, and never beside smtp.listen', () => {
  const config = parseConfig('[[listener]]\naddress = "127.0.0.1:25"\n[[listener]]\naddress = "[::1]:2525"\nproxy_protocol = true\n[proxy]\ntrusted = ["127.0.0.1"]\n', 'l.toml');
  assert.deepEqual(config.listener, [
    { address: { host: '127.0.0.1', port: 25 }, role: 'mx', proxyProtocol: false },
    { address: { host: '::1', port: 2525 }, role: 'mx', proxyProtocol: true },
  ]);
  assert.deepEqual(config.smtp.listen, [{ host: '127.0.0.1', port: 25 }, { host: '::1', port: 2525 }]);
  assert.throws(() => parseConfig('[smtp]\nlisten = ["127.0.0.1:25"]\n[[listener]]\naddress = "127.0.0.1:26"\n', 'l.toml'), /smtp\.listen: must not be set with \[\[listener\]\]/);
  assert.throws(() => parseConfig('[[listener]]\naddress = "127.0.0.1:26"\nrole = "submission"\n[[listener]]\naddress = "127.0.0.1:26"\n', 'l.toml'), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.ok(err.problems.some((p) => p.startsWith('listener[0].role')), err.problems.join('\n'));
    assert.ok(err.problems.some((p) => p.startsWith('listener[1].address') && p.includes('listener[0]')), err.problems.join('\n'));
    return true;
  });
  assert.throws(() => parseConfig('[[listener]]\naddress = "127.0.0.1:26"\nproxy_protocol = true\n', 'l.toml'), /proxy\.trusted must list/);
});

test('access.block_file: loadConfig reads it and names each bad line by its number', () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-block-'));
  try {
    writeFileSync(join(dir, 'blocked.txt'), '# list\n192.0.2.0/24\nnot-a-net\n');
    writeFileSync(join(dir, 'c.toml'), '[access]\nblock_file = "blocked.txt"\n');
    assert.throws(() => loadConfig('c.toml', { cwd: dir }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.problems[0]!, /access\.block_file .*blocked\.txt: line 3: "not-a-net"/);
      return true;
    });
    writeFileSync(join(dir, 'blocked.txt'), '# list\n192.0.2.0/24\n');
    assert.equal(loadConfig('c.toml', { cwd: dir }).access.blockFile, join(dir, 'blocked.txt'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
