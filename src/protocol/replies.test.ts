// The reply catalogue is the one place reply texts are written: HELP names every verb the command
// table knows, and no other source file builds a reply from a literal code.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { COMMAND_FACTS } from './command.ts';
import { formatReply, REPLY } from './replies.ts';

const SRC = fileURLToPath(new URL('../', import.meta.url));

/** Verbs the command table parses that the server does not offer yet (answered 502). */
const NOT_OFFERED = new Set(['AUTH']);

test('HELP lists every verb of the command table the server offers, EXPN and HELP included', () => {
  const listed = formatReply(REPLY.help).replace(/^214 2\.0\.0 Commands: /, '').trim().split(' ');
  assert.deepEqual(listed, Object.keys(COMMAND_FACTS).filter((verb) => !NOT_OFFERED.has(verb)));
  assert.ok(listed.includes('EXPN') && listed.includes('HELP'));
});

test('one text for 451 4.3.0, and the policy replies read as before', () => {
  assert.equal(formatReply(REPLY.localError), '451 4.3.0 Temporary local problem, try again later\r\n');
  assert.equal(formatReply(REPLY.dnsblListed('reject', 'rcpt', '192.0.2.1', ['a.example', 'b.example'])), '554 5.7.1 Service unavailable; client [192.0.2.1] blocked using a.example, b.example\r\n');
  assert.equal(REPLY.dnsblListed('tempfail', 'connect', '192.0.2.1', ['a.example']).code, 421);
  assert.equal(REPLY.dnsblListed('tempfail', 'rcpt', '192.0.2.1', ['a.example']).code, 450);
});

test('no source file outside the catalogue writes a reply code and text of its own', () => {
  const offenders: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') && path !== join(SRC, 'protocol', 'replies.ts')) {
        if (/\breply\(\s*\d{3}\s*,/.test(readFileSync(path, 'utf8'))) offenders.push(path.slice(SRC.length));
      }
    }
  };
  walk(SRC);
  assert.deepEqual(offenders, []);
});
