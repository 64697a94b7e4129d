// A client of rspamd's HTTP protocol: the message POSTed to /checkv2 with Node's own fetch, the
// envelope and client facts as request headers (IP, Helo, From, one Rcpt per recipient,
// Queue-Id, MTA-Name, User, TLS facts), and the JSON reply read back bounded (MAX_REPLY_BYTES)
// and checked field by field (score, required_score, action, symbols). One request per message,
// within one timeout (fetch has no separate connect timeout) and the pipeline's signal. Every
// outcome is a value; never throws. No rspamd client library: fetch and a JSON check suffice.

import type { SpamFinding } from './spam-verdict.ts';

export const MAX_REPLY_BYTES = 1024 * 1024;

export type RspamdErrorCode = 'connect' | 'timeout' | 'closed' | 'protocol' | 'scanner';

export type RspamdResult = ({ readonly kind: 'scored' } & SpamFinding) | { readonly kind: 'error'; readonly code: RspamdErrorCode; readonly reason: string };

export type RspamdEnvelope = {
  readonly clientAddress: string;
  readonly heloName: string | null;
  /** The reverse-path, '' for the null sender. */
  readonly sender: string;
  readonly recipients: readonly string[];
  readonly queueId: string;
  /** Our name (rspamd's MTA-Name). */
  readonly hostname: string;
  readonly authUser: string | null;
  readonly tls: { readonly protocol: string; readonly cipher: string } | null;
};

export type RspamdOptions = {
  /** The normal worker's base URL, e.g. "http://127.0.0.1:11333". */
  readonly url: string;
  readonly timeoutMs: number;
  /** rspamd's controller password, when its worker asks for one (sent as the Password header). */
  readonly password?: string;
};

const ACTIONS = new Set(['no action', 'greylist', 'add header', 'rewrite subject', 'soft reject', 'reject']);
const SYMBOL = /^[A-Za-z0-9_.:-]{1,100}$/;

function printable(text: string): string {
  const flat = text.replace(/[^\x20-\x7e]/g, '?');
  return flat.length > 200 ? `${flat.slice(0, 200)}…` : flat;
}

/**
 * A header value as fetch sends it: a ByteString, so UTF-8 (an SMTPUTF8 address) goes as its
 * octets. Security: the session's values are already SMTP syntax (no CR or LF); control
 * characters are dropped all the same, so no value can become a second header line.
 */
function headerValue(text: string): string {
  return Buffer.from(text.replace(/[\x00-\x1f\x7f]/g, ''), 'utf8').toString('latin1');
}

export function requestHeaders(e: RspamdEnvelope, password?: string): [string, string][] {
  const h: [string, string][] = [
    ['IP', e.clientAddress],
    ['Queue-Id', e.queueId],
    ['MTA-Name', e.hostname],
    ['From', e.sender === '' ? '<>' : e.sender],
    ...e.recipients.map((r): [string, string] => ['Rcpt', r]),
  ];
  if (e.heloName !== null) h.push(['Helo', e.heloName]);
  if (e.authUser !== null) h.push(['User', e.authUser]);
  if (e.tls !== null) h.push(['TLS-Version', e.tls.protocol], ['TLS-Cipher', e.tls.cipher]);
  if (password !== undefined) h.push(['Password', password]);
  return h.map(([k, v]) => [k, headerValue(v)]);
}

/** rspamd's /checkv2 JSON reply, checked; anything not shaped like one is a protocol error. */
export function parseRspamdReply(text: string): RspamdResult {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { kind: 'error', code: 'protocol', reason: `rspamd reply is not JSON: "${printable(text)}"` };
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return { kind: 'error', code: 'protocol', reason: 'rspamd reply is not a JSON object' };
  const r = json as Record<string, unknown>;
  if (typeof r.error === 'string') return { kind: 'error', code: 'scanner', reason: `rspamd: ${printable(r.error)}` };
  if (typeof r.score !== 'number' || !Number.isFinite(r.score)) return { kind: 'error', code: 'protocol', reason: 'rspamd reply has no numeric score' };
  if (typeof r.action !== 'string' || !ACTIONS.has(r.action)) return { kind: 'error', code: 'protocol', reason: `rspamd reply has an unknown action: ${printable(String(r.action))}` };
  const required = typeof r.required_score === 'number' && Number.isFinite(r.required_score) ? r.required_score : null;
  const symbols: string[] = [];
  if (typeof r.symbols === 'object' && r.symbols !== null && !Array.isArray(r.symbols)) {
    for (const name of Object.keys(r.symbols)) if (SYMBOL.test(name)) symbols.push(name);
  }
  return { kind: 'scored', score: r.score, required, action: r.action, symbols: symbols.sort() };
}

/** Reads at most `limit` octets of a body; null when it is longer. */
async function readBounded(body: ReadableStream<Uint8Array> | null, limit: number): Promise<string | null> {
  if (body === null) return '';
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    n += chunk.length;
    if (n > limit) {
      await body.cancel().catch(() => {});
      return null;
    }
    parts.push(Buffer.from(chunk));
  }
  return Buffer.concat(parts).toString('utf8');
}

/** Scores the message with rspamd. Always resolves. */
export async function rspamdScan(opts: RspamdOptions, envelope: RspamdEnvelope, message: { chunks(): AsyncIterable<Buffer> }, signal?: AbortSignal): Promise<RspamdResult> {
  const parts: Buffer[] = [];
  for await (const c of message.chunks()) parts.push(c);
  const timeout = AbortSignal.timeout(opts.timeoutMs);
  const both = signal === undefined ? timeout : AbortSignal.any([timeout, signal]);
  const url = `${opts.url.replace(/\/+$/, '')}/checkv2`;
  try {
    const res = await fetch(url, { method: 'POST', headers: requestHeaders(envelope, opts.password), body: Buffer.concat(parts), signal: both, redirect: 'error' });
    const text = await readBounded(res.body, MAX_REPLY_BYTES);
    if (text === null) return { kind: 'error', code: 'protocol', reason: `rspamd reply longer than ${MAX_REPLY_BYTES} bytes` };
    if (res.status !== 200) return { kind: 'error', code: 'scanner', reason: `rspamd answered HTTP ${res.status}: ${printable(text)}` };
    return parseRspamdReply(text);
  } catch (err) {
    if (both.aborted) return { kind: 'error', code: 'timeout', reason: `rspamd ${opts.url}: no reply within ${opts.timeoutMs} ms` };
    const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
    const code = (cause as { code?: unknown }).code;
    const text = cause instanceof Error ? cause.message : String(cause);
    if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' || code === 'UND_ERR_CONNECT_TIMEOUT') return { kind: 'error', code: 'connect', reason: `rspamd ${opts.url}: connect failed: ${text}` };
    if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'UND_ERR_CLOSED') return { kind: 'error', code: 'closed', reason: `rspamd ${opts.url}: connection failed: ${text}` };
    return { kind: 'error', code: 'protocol', reason: `rspamd ${opts.url}: ${printable(text)}` };
  }
}
