import assert from 'node:assert/strict';
import { test } from 'node:test';
import { accessLists, parseBlockFile } from './access.ts';

test('parseBlockFile: one CIDR per line, # comments, bad lines named by number', () => {
  const { cidrs, problems } = parseBlockFile('# spammers\n192.0.2.0/24\n\n2001:db8::/32  # a comment\nnot-a-net\n10.1.2.3/8\n198.51.100.7\n');
  assert.deepEqual(cidrs, ['192.0.2.0/24', '2001:db8::/32', '198.51.100.7/32']);
  assert.equal(problems.length, 2);
  assert.match(problems[0]!, /^line 5: "not-a-net"/);
  assert.match(problems[1]!, /^line 6: .*10\.0\.0\.0\/8/);
});

test('accessLists: allow and block match addresses, IPv4-mapped IPv6 as IPv4', () => {
  const lists = accessLists(['10.0.0.0/8'], ['192.0.2.0/24']);
  assert.equal(lists.isAllowed('10.1.2.3'), true);
  assert.equal(lists.isAllowed('::ffff:10.1.2.3'), true);
  assert.equal(lists.isBlocked('192.0.2.9'), true);
  assert.equal(lists.isBlocked('198.51.100.1'), false);
  assert.equal(accessLists([], []).isBlocked('192.0.2.9'), false);
});
