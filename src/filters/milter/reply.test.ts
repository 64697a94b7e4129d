// A filter's SMFIR_REPLYCODE text as the reply the client sees: accepted shapes, sanitizing, and
// what is refused (anything but a refusal, mixed codes, a mismatched enhanced code, too many lines).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatReply } from '../../protocol/replies.ts';
import { parseFilterReply } from './reply.ts';

test('filter reply codes: single and multi-line, enhanced code kept or defaulted, text sanitized', () => {
  assert.deepEqual(parseFilterReply('554 5.7.1 Gtube pattern'), { code: 554, enhanced: '5.7.1', lines: ['Gtube pattern'] });
  assert.deepEqual(parseFilterReply('451 Try later'), { code: 451, enhanced: '4.7.1', lines: ['Try later'] });
  assert.deepEqual(parseFilterReply('550'), { code: 550, enhanced: '5.7.1', lines: [''] });
  const multi = parseFilterReply('550-5.7.1 first\r\n550 5.7.1 second\r\n');
  assert.ok(typeof multi !== 'string');
  assert.equal(formatReply(multi), '550-5.7.1 first\r\n550 5.7.1 second\r\n');
  // Security: no control character reaches the client (a CR LF would forge a reply line).
  const dirty = parseFilterReply('550 5.7.1 bad\rinjected\x00\x7f\u00e9');
  assert.ok(typeof dirty !== 'string');
  assert.deepEqual(dirty.lines, ['bad?injected???']);
  assert.equal(formatReply(parseFilterReply(`550 ${'x'.repeat(1000)}`) as never).length, '550 5.7.1 '.length + 400 + 2);
  // 421 would close the session; a filter's temporary refusal does not.
  assert.equal((parseFilterReply('421 4.7.0 busy') as { code: number }).code, 451);
});

test('filter reply codes: what is refused', () => {
  for (const [text, why] of [
    ['250 2.0.0 ok', /only refuse/],
    ['354 go on', /only refuse/],
    ['hello', /three-digit/],
    ['550-first\r\n451 second', /different codes/],
    ['550 4.7.1 mismatched', /does not match/],
    [Array.from({ length: 11 }, () => '550-x').join('\r\n'), /at most 10/],
  ] as const) {
    const r = parseFilterReply(text);
    assert.ok(typeof r === 'string' && why.test(r), `${text}: ${JSON.stringify(r)}`);
  }
});
