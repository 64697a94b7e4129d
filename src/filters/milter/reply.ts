// A milter's own SMTP reply (SMFIR_REPLYCODE, Sendmail's smfi_setreply / smfi_setmlreply) as a
// Reply the client may see: only 4xx and 5xx codes, one code on every line, an enhanced code of
// the same class (RFC 3463) or none, printable ASCII text, bounded lines. Pure.
// Security: the text goes to the client verbatim, so control characters (a CR LF would start a
// reply line of the filter's choosing) become "?" and the line count and length are capped.

import { reply, type Reply } from '../../protocol/replies.ts';

const MAX_LINES = 10;
const MAX_LINE_CHARS = 400;

/** The filter's reply text -> a Reply, or why it is not acceptable. */
export function parseFilterReply(text: string): Reply | string {
  const lines = text.split(/\r?\n/);
  while (lines.length > 1 && lines[lines.length - 1] === '') lines.pop();
  if (lines.length > MAX_LINES) return `reply of ${lines.length} lines (at most ${MAX_LINES})`;
  let code = 0;
  let enhanced: string | null = null;
  const texts: string[] = [];
  for (const [i, line] of lines.entries()) {
    const m = /^([2-5]\d\d)(?:([ -])(.*))?$/s.exec(line);
    if (m === null) return `reply line ${i + 1} does not start with a three-digit code`;
    const c = Number(m[1]);
    if (c < 400 || c > 599) return `reply code ${c}: a filter may only refuse (4xx or 5xx)`;
    if (i === 0) code = c;
    else if (c !== code) return `reply lines carry different codes (${code}, ${c})`;
    let rest = m[3] ?? '';
    const e = /^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)/.exec(rest);
    if (e !== null) {
      if (e[1] !== String(code)[0]) return `enhanced code ${e[0].trim()} does not match reply code ${code}`;
      if (i === 0) enhanced = `${e[1]}.${Number(e[2])}.${Number(e[3])}`;
      rest = rest.slice(e[0].length);
    }
    texts.push(rest.replace(/[^\x20-\x7e]/g, '?').slice(0, MAX_LINE_CHARS));
  }
  // 421 closes the connection in SMTP (RFC 5321 3.8); a filter's temporary refusal does not.
  if (code === 421) code = 451;
  return reply(code, enhanced ?? (code >= 500 ? '5.7.1' : '4.7.1'), ...texts);
}
