// The [[milter]] configuration: addresses in every accepted form, defaults, and each problem
// named by its index; the builder makes one check for the chain, or none without tables.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { ConfigError, parseConfig } from '../../../config/load.ts';
import { buildPipeline } from '../../build.ts';
import { parseMilterAddress } from './config.ts';

test('milter addresses: host:port, [v6]:port, inet:port@host, UNIX paths; and what is wrong with the rest', () => {
  assert.deepEqual(parseMilterAddress('127.0.0.1:8891'), { kind: 'tcp', host: '127.0.0.1', port: 8891 });
  assert.deepEqual(parseMilterAddress('[::1]:8891'), { kind: 'tcp', host: '::1', port: 8891 });
  assert.deepEqual(parseMilterAddress('inet:11332@Localhost'), { kind: 'tcp', host: 'localhost', port: 11332 });
  assert.deepEqual(parseMilterAddress('/run/opendkim/opendkim.sock'), { kind: 'unix', path: '/run/opendkim/opendkim.sock' });
  assert.deepEqual(parseMilterAddress('unix:/run/x.sock'), { kind: 'unix', path: '/run/x.sock' });
  assert.match(parseMilterAddress('127.0.0.1') as string, /needs a port/);
  assert.match(parseMilterAddress('::1:8891') as string, /brackets/);
  assert.match(parseMilterAddress('127.0.0.1:0') as string, /from 1 to 65535/);
  assert.match(parseMilterAddress('127.0.0.1:99999') as string, /from 1 to 65535/);
  assert.match(parseMilterAddress('bad host:25') as string, /not an IP address or host name/);
  assert.match(parseMilterAddress('/run/a\nb') as string, /control characters/);
  assert.match(parseMilterAddress('unix:/') as string, /no socket path/);
});

test('[[milter]] tables: defaults, chain order, and each problem named by its index', () => {
  const config = parseConfig('[[milter]]\naddress = "127.0.0.1:8891"\n\n[[milter]]\naddress = "/run/rspamd.sock"\non_failure = "accept"\ncommand_timeout_seconds = 5\n', 'm.toml');
  assert.deepEqual(config.milter, [
    { address: { kind: 'tcp', host: '127.0.0.1', port: 8891 }, onFailure: 'tempfail', connectTimeoutSeconds: 10, commandTimeoutSeconds: 30 },
    { address: { kind: 'unix', path: '/run/rspamd.sock' }, onFailure: 'accept', connectTimeoutSeconds: 10, commandTimeoutSeconds: 5 },
  ]);
  assert.throws(
    () => parseConfig('[[milter]]\non_failure = "tempfail"\n[[milter]]\naddress = "x"\n[[milter]]\naddress = "127.0.0.1:1"\non_falure = "accept"\n[[milter]]\naddress = "127.0.0.1:1"\non_failure = "reject"\ncommand_timeout_seconds = 0\nconnect_timeout_seconds = 600\n', 'bad.toml'),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [
        'milter[0]: address must be set, e.g. address = "127.0.0.1:8891"',
        'milter[1].address = "x": needs a port ("127.0.0.1:8891") or a UNIX socket path ("/run/opendkim/opendkim.sock")',
        'unknown key "milter[2].on_falure" (did you mean "milter[2].on_failure"?)',
        'milter[3].on_failure = "reject": must be one of "tempfail", "accept"',
        ...err.problems.slice(4),
      ]);
      assert.equal(err.problems.length, 6);
      assert.match(err.problems[4], /^milter\[3\]\.command_timeout_seconds = 0: /);
      assert.match(err.problems[5], /^milter\[3\]\.connect_timeout_seconds = 600: /);
      return true;
    },
  );
  assert.throws(() => parseConfig('[milter]\naddress = "127.0.0.1:8891"\n', 'single.toml'), /write each filter under its own \[\[milter\]\] header/);
  assert.throws(() => parseConfig('[policy]\nchecks = ["spf"]\n[[milter]]\naddress = "127.0.0.1:8891"\n', 'p.toml'), /\[\[milter\]\] tables are present, so list "milter" too/);
});

test('the builder: no [[milter]] tables, no check; with tables, one check at every stage but data', () => {
  const log = pino({ level: 'silent' });
  assert.equal(buildPipeline(parseConfig('', 'empty.toml'), log), null);
  const pipeline = buildPipeline(parseConfig('[[milter]]\naddress = "127.0.0.1:8891"\n', 'm.toml'), log);
  assert.ok(pipeline !== null);
  assert.deepEqual([...pipeline.stages].sort(), ['connect', 'content', 'helo', 'mail', 'rcpt']);
});
