// Command formatters of the SMTP/LMTP client and the parser of the server's EHLO/LHLO keywords.
// Never writes a value that could end the line: every argument is checked for CR, LF and NUL
// here, the last place before the wire (our bug if one gets this far: it throws).
// RFC 5321 4.1.1 (commands), 4.1.2 (paths), RFC 1870 (SIZE), RFC 6152 (8BITMIME),
// RFC 3030 (CHUNKING, BINARYMIME), RFC 6531 (SMTPUTF8), RFC 3461 4 (NOTIFY, ORCPT, RET, ENVID
// as xtext), RFC 2033 (LHLO), RFC 3207 (STARTTLS).

import { encodeXtext } from '../address.ts';
import type { Reply } from '../replies.ts';
import type { DsnNotify } from '../../message/accepted.ts';

export type BodyType = '7BIT' | '8BITMIME' | 'BINARYMIME';

export type MailParams = {
  size?: number;
  body?: BodyType;
  smtputf8?: boolean;
  ret?: 'FULL' | 'HDRS';
  envid?: string;
};

export type RcptParams = {
  notify?: DsnNotify;
  orcpt?: { addrType: string; address: string };
};

/** What the server offered in its EHLO/LHLO reply (keywords upper-cased). */
export type Extensions = {
  readonly keywords: ReadonlySet<string>;
  /** RFC 1870: the SIZE value; 0 means "no fixed limit"; null when SIZE was not offered. */
  readonly maxSize: number | null;
};

export const NO_EXTENSIONS: Extensions = { keywords: new Set(), maxSize: null };

/** Security: nothing we format may carry a line end or NUL (command injection). */
function checkArg(value: string, what: string): string {
  if (/[\r\n\0]/.test(value)) throw new Error(`client command: ${what} holds CR, LF or NUL`);
  return value;
}

/** True when `address` can go between angle brackets as it is: no CR, LF or NUL anywhere, and
 *  white space, `<` and `>` only inside a quoted local part (RFC 5321 4.1.2 Quoted-string), so
 *  nothing in it can end the path or start a parameter. */
export function isWritablePath(address: string): boolean {
  if (/[\r\n\0]/.test(address)) return false;
  let rest = address;
  if (address.startsWith('"')) {
    let i = 1;
    while (i < address.length && address[i] !== '"') i += address[i] === '\\' ? 2 : 1;
    if (i >= address.length) return false;
    rest = address.slice(i + 1);
  }
  return !/[<>\s]/.test(rest);
}

/** The path inside angle brackets; '' is the null reverse-path `<>`. */
function path(address: string): string {
  if (!isWritablePath(address)) throw new Error('client command: address cannot be written as a path');
  return `<${address}>`;
}

export function formatGreetingCommand(verb: 'EHLO' | 'HELO' | 'LHLO', heloName: string): string {
  return `${verb} ${checkArg(heloName, 'HELO name')}\r\n`;
}

export function formatMail(reversePath: string, p: MailParams = {}): string {
  let line = `MAIL FROM:${path(reversePath)}`;
  if (p.size !== undefined) line += ` SIZE=${Math.max(0, Math.floor(p.size))}`;
  if (p.body !== undefined && p.body !== '7BIT') line += ` BODY=${p.body}`;
  if (p.smtputf8 === true) line += ' SMTPUTF8';
  if (p.ret !== undefined) line += ` RET=${p.ret}`;
  if (p.envid !== undefined) line += ` ENVID=${encodeXtext(p.envid)}`;
  return `${line}\r\n`;
}

export function formatRcpt(forwardPath: string, p: RcptParams = {}): string {
  let line = `RCPT TO:${path(forwardPath)}`;
  if (p.notify !== undefined) line += ` NOTIFY=${p.notify === 'NEVER' ? 'NEVER' : p.notify.join(',')}`;
  if (p.orcpt !== undefined) line += ` ORCPT=${checkArg(p.orcpt.addrType, 'ORCPT type')};${encodeXtext(p.orcpt.address)}`;
  return `${line}\r\n`;
}

export function formatBdat(octets: number, isLast: boolean): string {
  return `BDAT ${octets}${isLast ? ' LAST' : ''}\r\n`;
}

export const DATA = 'DATA\r\n';
export const RSET = 'RSET\r\n';
export const QUIT = 'QUIT\r\n';
export const STARTTLS = 'STARTTLS\r\n';

/** RFC 5321 4.1.1.1: the first line is the greeting name, each further line a keyword and its
 *  parameters. Unknown keywords are kept (upper-cased); a bad SIZE value counts as no limit. */
export function parseExtensions(r: Reply): Extensions {
  const keywords = new Set<string>();
  let maxSize: number | null = null;
  for (let i = 1; i < r.lines.length; i++) {
    const [word, ...params] = r.lines[i].trim().split(/\s+/);
    if (word === undefined || word === '') continue;
    const key = word.toUpperCase();
    keywords.add(key);
    if (key === 'SIZE') {
      const n = params.length > 0 && /^\d{1,15}$/.test(params[0]) ? Number(params[0]) : 0;
      maxSize = n;
    }
  }
  return { keywords, maxSize };
}
