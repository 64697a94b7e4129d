// The client's command formatters and the EHLO keyword parser.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeXtext } from '../address.ts';
import { formatBdat, formatGreetingCommand, formatMail, formatRcpt, isWritablePath, parseExtensions } from './commands.ts';

test('MAIL carries SIZE, BODY, SMTPUTF8, RET and ENVID (as xtext)', () => {
  assert.equal(formatMail('', {}), 'MAIL FROM:<>\r\n');
  assert.equal(formatMail('a@b.example', { size: 1024, body: '8BITMIME', smtputf8: true, ret: 'HDRS', envid: 'id+1=x y' }), 'MAIL FROM:<a@b.example> SIZE=1024 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1+3Dx+20y\r\n');
  assert.equal(decodeXtext('id+2B1+3Dx+20y'), 'id+1=x y');
  assert.equal(formatMail('a@b.example', { body: '7BIT' }), 'MAIL FROM:<a@b.example>\r\n');
});

test('RCPT carries NOTIFY and ORCPT (as xtext)', () => {
  assert.equal(formatRcpt('u@d.example', { notify: ['SUCCESS', 'FAILURE'], orcpt: { addrType: 'rfc822', address: 'U+1@d.example' } }), 'RCPT TO:<u@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;U+2B1@d.example\r\n');
  assert.equal(formatRcpt('u@d.example', { notify: 'NEVER' }), 'RCPT TO:<u@d.example> NOTIFY=NEVER\r\n');
});

test('Security: no argument can carry a line end or break out of the path', () => {
  assert.throws(() => formatMail('a@b\r\nRCPT TO:<x@y>'));
  assert.throws(() => formatRcpt('a@b> NOTIFY=NEVER'));
  assert.throws(() => formatGreetingCommand('EHLO', 'x\r\nMAIL FROM:<>'));
  assert.throws(() => formatRcpt('a@b', { orcpt: { addrType: 'rfc822\n', address: 'a' } }));
  assert.throws(() => formatRcpt('"a b"@c d'));
  assert.throws(() => formatRcpt('"open@c'));
  // A quoted local part may hold spaces and brackets (RFC 5321 4.1.2).
  assert.equal(formatRcpt('"john <doe> x"@example.test'), 'RCPT TO:<"john <doe> x"@example.test>\r\n');
  assert.equal(formatRcpt('"a\\"b"@example.test'), 'RCPT TO:<"a\\"b"@example.test>\r\n');
  assert.ok(!isWritablePath('a\r\n@b') && isWritablePath('') && isWritablePath('a@b'));
});

test('BDAT and the greeting commands', () => {
  assert.equal(formatBdat(10, false), 'BDAT 10\r\n');
  assert.equal(formatBdat(0, true), 'BDAT 0 LAST\r\n');
  assert.equal(formatGreetingCommand('LHLO', 'mx.example.test'), 'LHLO mx.example.test\r\n');
});

test('EHLO keywords are upper-cased; SIZE gives the limit, a bare or bad SIZE is no limit', () => {
  const ext = parseExtensions({ code: 250, enhanced: null, lines: ['mx hello', 'pipelining', 'SIZE 10240000', 'DSN', 'AUTH PLAIN'] });
  assert.deepEqual([...ext.keywords], ['PIPELINING', 'SIZE', 'DSN', 'AUTH']);
  assert.equal(ext.maxSize, 10240000);
  assert.equal(parseExtensions({ code: 250, enhanced: null, lines: ['mx', 'SIZE'] }).maxSize, 0);
  assert.equal(parseExtensions({ code: 250, enhanced: null, lines: ['mx', 'SIZE x'] }).maxSize, 0);
  assert.equal(parseExtensions({ code: 250, enhanced: null, lines: ['mx'] }).maxSize, null);
});
