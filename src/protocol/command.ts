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
  | { verb: 'STARTTLS' }
  /** Not offered yet (submission comes later): parsed so it can be refused, and redacted. */
  | { verb: 'AUTH'; mechanism: string };

export type Verb = Command['verb'];

export type ParseResult =
  | { ok: true; command: Command }
  | { ok: false; error: 'unknown' }
  | { ok: false; error: 'syntax'; usage: string };

/**
 * Facts about each command, as data (STYLE.md; Postfix keeps the same kind of table):
 * - `usage`: the syntax shown in a 501 reply.
 * - `hasArgument`: whether the command takes an argument.
 * - `isAllowedBeforeTls`: may be used on a listener that requires TLS before the handshake
 *   (RFC 3207 4; a submission listener refuses the rest with 530 5.7.0).
 * - `isJunk`: costs the server without moving mail forward (NOOP, RSET, VRFY, EXPN, HELP);
 *   counted in the session's `junk` counter, which connection defense limits.
 * - `endsPipelineGroup`: RFC 2920 3.1: the last command of a group the client may pipeline
 *   (the client waits for its reply before sending more).
 * - `redactAfterWords`: the debug log keeps only this many words of the line and writes `****`
 *   for the rest (credentials); null: the line is logged as it is.
 */
export type CommandFacts = {
  readonly usage: string;
  readonly hasArgument: 'none' | 'optional' | 'required';
  readonly isAllowedBeforeTls: boolean;
  readonly isJunk: boolean;
  readonly endsPipelineGroup: boolean;
  readonly redactAfterWords: number | null;
};

function facts(usage: string, hasArgument: CommandFacts['hasArgument'], flags: { beforeTls?: boolean; junk?: boolean; endsGroup?: boolean; redactAfterWords?: number } = {}): CommandFacts {
  return {
    usage,
    hasArgument,
    isAllowedBeforeTls: flags.beforeTls ?? false,
    isJunk: flags.junk ?? false,
    endsPipelineGroup: flags.endsGroup ?? false,
    redactAfterWords: flags.redactAfterWords ?? null,
  };
}

export const COMMAND_FACTS: Readonly<Record<Verb, CommandFacts>> = {
  EHLO: facts('EHLO hostname', 'optional', { beforeTls: true, endsGroup: true }),
  HELO: facts('HELO hostname', 'optional', { beforeTls: true, endsGroup: true }),
  MAIL: facts('MAIL FROM:<address> [parameters]', 'required'),
  RCPT: facts('RCPT TO:<address> [parameters]', 'required'),
  DATA: facts('DATA', 'none', { endsGroup: true }),
  BDAT: facts('BDAT size [LAST]', 'required'),
  RSET: facts('RSET', 'none', { beforeTls: true, junk: true }),
  NOOP: facts('NOOP [text]', 'optional', { beforeTls: true, junk: true, endsGroup: true }),
  QUIT: facts('QUIT', 'none', { beforeTls: true, endsGroup: true }),
  VRFY: facts('VRFY address', 'required', { junk: true, endsGroup: true }),
  EXPN: facts('EXPN list', 'required', { junk: true, endsGroup: true }),
  HELP: facts('HELP [topic]', 'optional', { beforeTls: true, junk: true, endsGroup: true }),
  STARTTLS: facts('STARTTLS', 'none', { beforeTls: true, endsGroup: true }),
  // RFC 4954 4: the initial response (and every SASL line after it) carries credentials.
  AUTH: facts('AUTH mechanism [initial-response]', 'required', { endsGroup: true, redactAfterWords: 2 }),
};

/** What a line of the given reader may be logged as. Security: credentials never reach the log. */
export function loggableLine(line: string, isSasl = false): string {
  // RFC 4954 4: a line sent in a SASL exchange is a credential (or a part of one), whatever it says.
  if (isSasl) return '****';
  const sp = line.indexOf(' ');
  const verb = (sp === -1 ? line : line.slice(0, sp)).toUpperCase();
  if (!isVerb(verb)) return line;
  const keep = COMMAND_FACTS[verb].redactAfterWords;
  if (keep === null) return line;
  const words = line.split(' ');
  return words.length <= keep ? line : `${words.slice(0, keep).join(' ')} ****`;
}

/** chunk-size (at most 15 digits: beyond Number.MAX_SAFE_INTEGER's precision is nonsense) [LAST]. */
const BDAT_ARGUMENT = /^(\d{1,15})(?: +(LAST))?$/i;

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
      const m = BDAT_ARGUMENT.exec(arg);
      if (m === null) return syntax;
      return { ok: true, command: { verb: 'BDAT', size: Number(m[1]), isLast: m[2] !== undefined } };
    }
    case 'VRFY':
    case 'EXPN':
      return { ok: true, command: { verb: verbText, argument: arg } };
    case 'AUTH':
      return { ok: true, command: { verb: 'AUTH', mechanism: arg.split(' ')[0].toUpperCase() } };
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
