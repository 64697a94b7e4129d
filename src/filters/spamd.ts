// A client of SpamAssassin's spamd (the SPAMC/1.5 protocol, as spamc speaks it): one connection
// per message, "SYMBOLS SPAMC/1.5" with the message's Content-length, the message, then spamd's
// "SPAMD/1.1 0 EX_OK" reply with its "Spam: True ; <score> / <required>" header and the names of
// the rules that hit. The reply reader is pure and bounded (MAX_REPLY_BYTES); the socket's part
// is exchange.ts. Every outcome is a value; never throws.
//
// Why not spamc: a process per message, and its exit codes blur "spamd is down" with "not spam"
// unless run in modes that print the very reply this reads. The protocol is a few lines of text.

import type { Endpoint } from '../net/endpoint.ts';
import { exchange, type ExchangeErrorCode, type Write } from './exchange.ts';
import type { SpamFinding } from './spam-verdict.ts';

export const MAX_REPLY_BYTES = 64 * 1024;

export type SpamdErrorCode = ExchangeErrorCode | 'protocol' | 'scanner';

export type SpamdResult = ({ readonly kind: 'scored' } & SpamFinding) | { readonly kind: 'error'; readonly code: SpamdErrorCode; readonly reason: string };

export type SpamdOptions = {
  readonly address: Endpoint;
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
};

function printable(text: string): string {
  const flat = text.replace(/[^\x20-\x7e]/g, '?');
  return flat.length > 200 ? `${flat.slice(0, 200)}…` : flat;
}

const STATUS = /^SPAMD\/\d+\.\d+ (\d+) (.*)$/;
const SPAM = /^(True|False|Yes|No) ; (-?\d+(?:\.\d+)?) \/ (-?\d+(?:\.\d+)?)$/;
const SYMBOL = /^[A-Za-z0-9_.:-]{1,100}$/;

/** spamd's whole reply (status line, headers, body), complete or as far as it came. */
export function parseSpamdReply(reply: Buffer, isComplete: boolean): SpamdResult | null {
  const text = reply.toString('latin1');
  const headEnd = text.indexOf('\r\n\r\n');
  const firstEnd = text.indexOf('\r\n');
  if (firstEnd < 0) return isComplete ? { kind: 'error', code: 'protocol', reason: `not a spamd reply: "${printable(text)}"` } : null;
  const status = STATUS.exec(text.slice(0, firstEnd));
  if (status === null) return { kind: 'error', code: 'protocol', reason: `not a spamd reply: "${printable(text.slice(0, firstEnd))}"` };
  if (status[1] !== '0') return { kind: 'error', code: 'scanner', reason: `spamd: ${status[1]} ${printable(status[2]!)}` };
  if (headEnd < 0) return isComplete ? { kind: 'error', code: 'protocol', reason: 'spamd reply ends within its headers' } : null;
  let length: number | null = null;
  let spam: RegExpExecArray | null = null;
  for (const line of text.slice(firstEnd + 2, headEnd).split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) return { kind: 'error', code: 'protocol', reason: `spamd header without a colon: "${printable(line)}"` };
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === 'content-length') length = /^\d{1,7}$/.test(value) ? Number(value) : NaN;
    else if (name === 'spam') spam = SPAM.exec(value);
  }
  if (spam === null) return { kind: 'error', code: 'protocol', reason: 'spamd reply without a readable Spam header' };
  if (length !== null && Number.isNaN(length)) return { kind: 'error', code: 'protocol', reason: 'spamd reply with an unreadable Content-length' };
  const body = text.slice(headEnd + 4);
  if (length !== null && body.length < length && !isComplete) return null;
  if (length !== null && body.length !== length) return { kind: 'error', code: 'protocol', reason: `spamd reply body of ${body.length} bytes, Content-length ${length}` };
  if (length === null && !isComplete) return null;
  const symbols = body.trim() === '' ? [] : body.trim().split(',').map((s) => s.trim());
  if (!symbols.every((s) => SYMBOL.test(s))) return { kind: 'error', code: 'protocol', reason: `spamd rule names unreadable: "${printable(body)}"` };
  return { kind: 'scored', score: Number(spam[2]), required: Number(spam[3]), action: null, symbols };
}

/** Collects spamd's reply however it is split: complete at its Content-length, or when spamd closes. */
export class SpamdReplyReader {
  #parts: Buffer[] = [];
  #bytes = 0;
  #result: SpamdResult | null = null;

  push(bytes: Buffer): SpamdResult | null {
    if (this.#result !== null) return this.#result;
    this.#parts.push(bytes);
    this.#bytes += bytes.length;
    if (this.#bytes > MAX_REPLY_BYTES) return (this.#result = { kind: 'error', code: 'protocol', reason: `spamd reply longer than ${MAX_REPLY_BYTES} bytes` });
    return (this.#result = parseSpamdReply(Buffer.concat(this.#parts), false));
  }

  end(): SpamdResult | null {
    if (this.#result !== null) return this.#result;
    if (this.#bytes === 0) return null;
    return (this.#result = parseSpamdReply(Buffer.concat(this.#parts), true));
  }
}

/** Scores a message of `bytes` octets with spamd. Always resolves. */
export function spamdScan(opts: SpamdOptions, message: { bytes: number; chunks(): AsyncIterable<Buffer> }, signal?: AbortSignal): Promise<SpamdResult> {
  const send = async (write: Write): Promise<SpamdResult | undefined> => {
    if (!(await write(Buffer.from(`SYMBOLS SPAMC/1.5\r\nContent-length: ${message.bytes}\r\n\r\n`, 'latin1')))) return undefined;
    let sent = 0;
    for await (const chunk of message.chunks()) {
      sent += chunk.length;
      // Our bug if it happens: spamd would wait for the missing octets or misread the next.
      if (sent > message.bytes) return { kind: 'error', code: 'protocol', reason: `message longer than its Content-length ${message.bytes}` };
      if (!(await write(chunk))) return undefined;
    }
    if (sent !== message.bytes) return { kind: 'error', code: 'protocol', reason: `message of ${sent} bytes, Content-length ${message.bytes}` };
    return undefined;
  };
  return exchange({ ...opts, name: 'spamd' }, send, new SpamdReplyReader(), signal);
}
