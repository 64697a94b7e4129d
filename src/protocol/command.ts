// Command-line parsing into typed commands, and the per-command facts table.
// Pure: never looks at session state (sequence checks live in commands/*.ts).
// RFC 5321 4.1.1 (verbs), 4.1.2 (syntax), RFC 1869 (esmtp-param), RFC 3030 (BDAT).

export type Command =
  | { verb: 'EHLO' | 'HELO'; domain: string }
  | { verb: 'MAIL'; argument: string }
  | { verb: 'RCPT'; argument: string }
  | { verb: 'DATA' }
  | { verb: 'BDAT'; size: number; isLast: boolean }
  | { verb: 'RSET' }
  | { verb: 'NOOP' }
  | { verb: 'QUIT' }
  | { verb: 'VRFY'; argument: string }
  | { verb: 'EXPN'; argument: string }
  | { verb: 'HELP' }
  | { verb: 'STARTTLS' };

export type Verb = Command['verb'];

export type ParseResult =
  | { ok: true; command: Command }
  | { ok: false; error: 'unknown' }
  | { ok: false; error: 'syntax'; usage: string };

/** Facts about each command, as data (STYLE.md). */
export const COMMAND_FACTS: Record<Verb, { usage: string; hasArgument: 'none' | 'optional' | 'required' }> = {
  EHLO: { usage: 'EHLO hostname', hasArgument: 'optional' },
  HELO: { usage: 'HELO hostname', hasArgument: 'optional' },
  MAIL: { usage: 'MAIL FROM:<address> [parameters]', hasArgument: 'required' },
  RCPT: { usage: 'RCPT TO:<address> [parameters]', hasArgument: 'required' },
  DATA: { usage: 'DATA', hasArgument: 'none' },
  BDAT: { usage: 'BDAT size [LAST]', hasArgument: 'required' },
  RSET: { usage: 'RSET', hasArgument: 'none' },
  NOOP: { usage: 'NOOP [text]', hasArgument: 'optional' },
  QUIT: { usage: 'QUIT', hasArgument: 'none' },
  VRFY: { usage: 'VRFY address', hasArgument: 'required' },
  EXPN: { usage: 'EXPN list', hasArgument: 'required' },
  HELP: { usage: 'HELP [topic]', hasArgument: 'optional' },
  STARTTLS: { usage: 'STARTTLS', hasArgument: 'none' },
};

const MAX_BDAT_DIGITS = 15; // beyond Number.MAX_SAFE_INTEGER's precision is nonsense anyway

function isVerb(s: string): s is Verb {
  return Object.hasOwn(COMMAND_FACTS, s);
}

export function parseCommand(line: string): ParseResult {
  const sp = line.indexOf(' ');
  const verbText = (sp === -1 ? line : line.slice(0, sp)).toUpperCase();
  const arg = sp === -1 ? '' : line.slice(sp + 1).trim();
  if (!isVerb(verbText)) return { ok: false, error: 'unknown' };
  const facts = COMMAND_FACTS[verbText];
  const syntax = { ok: false, error: 'syntax', usage: facts.usage } as const;
  if (facts.hasArgument === 'none' && arg !== '') return syntax;
  if (facts.hasArgument === 'required' && arg === '') return syntax;
  switch (verbText) {
    case 'EHLO':
    case 'HELO':
      return { ok: true, command: { verb: verbText, domain: arg } };
    case 'MAIL': {
      if (arg.slice(0, 5).toUpperCase() !== 'FROM:') return syntax;
      return { ok: true, command: { verb: 'MAIL', argument: arg.slice(5) } };
    }
    case 'RCPT': {
      if (arg.slice(0, 3).toUpperCase() !== 'TO:') return syntax;
      return { ok: true, command: { verb: 'RCPT', argument: arg.slice(3) } };
    }
    case 'BDAT': {
      const m = /^(\d{1,15})(?: +(LAST))?$/i.exec(arg);
      if (m === null || m[1].length > MAX_BDAT_DIGITS) return syntax;
      return { ok: true, command: { verb: 'BDAT', size: Number(m[1]), isLast: m[2] !== undefined } };
    }
    case 'VRFY':
    case 'EXPN':
      return { ok: true, command: { verb: verbText, argument: arg } };
    case 'DATA':
    case 'RSET':
    case 'NOOP':
    case 'QUIT':
    case 'HELP':
    case 'STARTTLS':
      return { ok: true, command: { verb: verbText } };
    default:
      return assertNever(verbText);
  }
}

export function assertNever(x: never): never {
  throw new Error(`unreachable: ${String(x)}`);
}

export type Params = Map<string, string | null>;

/**
 * RFC 5321 4.1.2 Mail-parameters / Rcpt-parameters: esmtp-keyword ["=" esmtp-value], separated
 * by spaces. Keywords are case-insensitive (returned upper-cased); duplicates are an error.
 */
export function parseParams(rest: string): { ok: true; params: Params } | { ok: false; duplicate?: string } {
  const params: Params = new Map();
  const text = rest.trim();
  if (text === '') return { ok: true, params };
  for (const part of text.split(/ +/)) {
    const eq = part.indexOf('=');
    const key = (eq === -1 ? part : part.slice(0, eq)).toUpperCase();
    const value = eq === -1 ? null : part.slice(eq + 1);
    if (!/^[A-Z0-9][A-Z0-9-]*$/.test(key)) return { ok: false };
    // esmtp-value: any CHAR except "=", SP and control characters (RFC 5321 4.1.2).
    if (value !== null && (value === '' || !/^[\x21-\x3c\x3e-\x7e\u0080-\uffff]+$/.test(value))) return { ok: false };
    if (params.has(key)) return { ok: false, duplicate: key };
    params.set(key, value);
  }
  return { ok: true, params };
}
