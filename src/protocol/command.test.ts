// The per-command facts table and what the debug log may keep of a command line.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MachineDriver, testMachineConfig } from '../../test/helpers/drive.ts';
import { COMMAND_FACTS, loggableLine, parseCommand } from './command.ts';

test('every verb has every fact', () => {
  for (const [verb, f] of Object.entries(COMMAND_FACTS)) {
    assert.equal(typeof f.usage, 'string', verb);
    assert.ok(f.usage.startsWith(verb), `${verb}: usage starts with the verb`);
    assert.equal(typeof f.isAllowedBeforeTls, 'boolean', verb);
    assert.equal(typeof f.isJunk, 'boolean', verb);
    assert.equal(typeof f.endsPipelineGroup, 'boolean', verb);
    assert.ok(f.redactAfterWords === null || f.redactAfterWords > 0, verb);
  }
  // RFC 2920 3.1: the commands that end a pipeline group.
  for (const verb of ['EHLO', 'HELO', 'DATA', 'VRFY', 'EXPN', 'QUIT', 'NOOP'] as const) assert.ok(COMMAND_FACTS[verb].endsPipelineGroup, verb);
  for (const verb of ['MAIL', 'RCPT', 'RSET', 'BDAT'] as const) assert.ok(!COMMAND_FACTS[verb].endsPipelineGroup, verb);
});

test('Security: AUTH and SASL lines are logged without their credentials', () => {
  assert.equal(loggableLine('AUTH PLAIN AGFsaWNlAHNlY3JldA=='), 'AUTH PLAIN ****');
  assert.equal(loggableLine('auth login YWxpY2U='), 'auth login ****');
  assert.equal(loggableLine('AUTH PLAIN'), 'AUTH PLAIN');
  assert.equal(loggableLine('AUTH PLAIN AGFsaWNl AHNlY3JldA=='), 'AUTH PLAIN ****');
  // A continuation line of a SASL exchange is a credential whatever it looks like.
  assert.equal(loggableLine('AGFsaWNlAHNlY3JldA==', true), '****');
  assert.equal(loggableLine('MAIL FROM:<a@b.example>'), 'MAIL FROM:<a@b.example>');
  assert.equal(loggableLine('XYZZY secret'), 'XYZZY secret');
});

test('Security: the machine debug-logs an AUTH line as AUTH PLAIN **** and refuses it (not offered)', () => {
  const cfg = testMachineConfig({ isTlsAvailable: false });
  const d = new MachineDriver(cfg);
  d.send('EHLO c.example\r\n');
  assert.deepEqual(d.send('AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n'), ['502 5.5.1 AUTH command is disabled']);
  const logged = JSON.stringify(d.outputs.filter((o) => o.type === 'log'));
  assert.ok(!logged.includes('AGFsaWNlAHNlY3JldA=='), 'the credential is not in any log output');
  assert.ok(logged.includes('AUTH PLAIN ****'));
  assert.deepEqual(parseCommand('AUTH PLAIN x'), { ok: true, command: { verb: 'AUTH', mechanism: 'PLAIN' } });
});
