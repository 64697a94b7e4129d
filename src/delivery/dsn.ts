// Delivery status notifications: composes the DSN message for one message and one event (a
// failure, a delay warning, a success or a relay) covering every recipient that shares it. Pure:
// facts in, bytes out; no clock, no randomness, no I/O. The queue decides when to call it and
// sends the result through itself, from the null reverse-path (RFC 3461 6.2, RFC 5321 4.5.5).
// Never emits a CR or LF that is not a line end or a fold, and never puts a peer's text
// (replies, addresses, ENVID, ORCPT) in the DSN's own header fields unsanitized.
// RFC 6522 (multipart/report), RFC 3464 (message/delivery-status), RFC 3463 (status codes),
// RFC 3461 (NOTIFY, RET, ENVID, ORCPT), RFC 6533 (DSNs for SMTPUTF8 messages), RFC 3834 (Auto-Submitted).
//
// Hand-written: a DSN is a fixed three-part MIME layout whose every field we must control (what
// is folded, what is escaped, which bytes are returned); a general MIME builder would add an
// encoder and its choices (base64 of the returned message, line re-wrapping) that RFC 3464 does
// not want. The test parses every DSN back with a real MIME parser (mailparser).

import { createHash } from 'node:crypto';
import type { DsnNotify } from '../message/accepted.ts';
import { foldField, oneLine } from '../message/header-field.ts';
import { formatRfc5322Date } from '../message/received.ts';
import type { DeliveryReply } from './types.ts';

/** RFC 3464 2.3.3 action values we report ("expanded" is for list expansion, which we do not do). */
export type DsnAction = 'failed' | 'delayed' | 'delivered' | 'relayed';

export type DsnRecipient = {
  /** The address we delivered or tried to deliver to (Final-Recipient). */
  address: string;
  notify?: DsnNotify;
  /** RFC 3461 ORCPT as received: address type and the xtext-decoded address. */
  orcpt?: { addrType: string; address: string };
  action: DsnAction;
  /** RFC 3463 code; default: the reply's enhanced code, else `${class}.0.0` from the reply or the action. */
  status?: string;
  /** The reply that decided it (Diagnostic-Code), null when there is none (a success without one). */
  reply: DeliveryReply | null;
  /** The host that gave the reply (Remote-MTA); null for our own (local) replies. */
  remoteMta: string | null;
  lastAttemptMs: number | null;
  /** Delays only: when the queue gives up (Will-Retry-Until). */
  willRetryUntilMs?: number | null;
};

export type DsnInput = {
  /** Our host name (Reporting-MTA, From: MAILER-DAEMON@...). */
  reportingMta: string;
  /** The original message's queue id (X-Portcullis-Queue-ID, the human text). */
  queueId: string;
  /** The original reverse-path: where the DSN goes; '' (the null path) gets none. */
  reversePath: string;
  envid?: string;
  ret?: 'FULL' | 'HDRS';
  arrivalMs: number;
  smtputf8: boolean;
  bodyType?: '7BIT' | '8BITMIME' | 'BINARYMIME';
  recipients: readonly DsnRecipient[];
  /** The stored content, canonical CRLF (only the header section is read when that is all we return). */
  content: Buffer;
  nowMs: number;
  /** The DSN's own Message-ID local part; default derived from the queue id and the time. */
  messageIdLocal?: string;
  /** Without RET, the full message is returned up to this size, else its header section only (default 50,000 octets). */
  fullReturnMaxBytes?: number;
};

export type ComposedDsn = {
  /** Always the null reverse-path (RFC 3461 6.2): a DSN is never answered with a DSN. */
  reversePath: '';
  /** The one envelope recipient: the original reverse-path. */
  recipient: string;
  /** Send with SMTPUTF8 (RFC 6533 DSN of an SMTPUTF8 message). */
  smtputf8: boolean;
  bodyType: '7BIT' | '8BITMIME';
  /** Indexes into the input's recipients that this DSN reports. */
  reported: number[];
  returned: 'full' | 'headers';
  bytes: Buffer;
};

/**
 * Postfix's bounce_size_limit: without RET, a message up to this size comes back whole, a larger
 * one as its header section only, so a DSN of a 25 MB message is not itself refused by size.
 */
export const DSN_FULL_RETURN_MAX_BYTES = 50_000;

/** RFC 5322 2.1.1: no line of what we return may pass 998 octets. */
const MAX_LINE_OCTETS = 998;
/** Diagnostic text kept from one reply (the client bounds replies already; this bounds the DSN). */
const MAX_DIAGNOSTIC_CHARS = 2000;
const TEXT_WRAP_COLUMNS = 76;

/**
 * RFC 3461 4.1: whether a recipient's NOTIFY asks for a DSN of this action. Without NOTIFY we
 * report failures and delays (the RFC lets an MTA choose FAILURE or FAILURE,DELAY; Postfix and
 * most MTAs warn of delays).
 */
export function wantsDsn(notify: DsnNotify | undefined, action: DsnAction): boolean {
  if (notify === 'NEVER') return false;
  const asked = notify ?? ['FAILURE', 'DELAY'];
  switch (action) {
    case 'failed':
      return asked.includes('FAILURE');
    case 'delayed':
      return asked.includes('DELAY');
    case 'delivered':
    case 'relayed':
      return asked.includes('SUCCESS');
  }
}

const STATUS = /^([245])\.(\d{1,3})\.(\d{1,3})$/;

function statusOf(r: DsnRecipient): string {
  if (r.status !== undefined && STATUS.test(r.status)) return r.status;
  if (r.reply?.enhanced != null && STATUS.test(r.reply.enhanced)) return r.reply.enhanced;
  const cls = r.reply !== null && r.reply.code >= 200 && r.reply.code < 600 ? Math.floor(r.reply.code / 100) : r.action === 'failed' ? 5 : r.action === 'delayed' ? 4 : 2;
  return `${cls === 3 ? 2 : cls}.0.0`;
}

/** Text for a field or the human part: controls become spaces; outside a UTF-8 DSN, non-ASCII becomes "?". */
function clean(text: string, isUtf8: boolean, max: number): string {
  const line = oneLine(text, max);
  // Security: bidi and invisible format characters could make the human text lie (RFC 6533 6).
  const safe = line.replace(/[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g, '?');
  return isUtf8 ? safe : safe.replace(/[^\x20-\x7e]/g, '?');
}

/**
 * An address as a DSN field value (RFC 3464 2.3.1-2.3.2, RFC 6533 3): "rfc822; a@b" when it is
 * printable ASCII, else "utf-8; ..." with RFC 6533 embedded-unicode escapes (\x{HHHH}) for every
 * character a message/delivery-status field may not hold (all non-ASCII in a plain DSN; controls
 * and "\" in a global one).
 */
function addressField(address: string, isGlobal: boolean, addrType = 'rfc822'): string {
  const type = /^[A-Za-z0-9-]{1,40}$/.test(addrType) ? addrType.toLowerCase() : 'rfc822';
  if (/^[\x21-\x7e]+$/.test(address) && !address.includes('\\')) return `${type === 'utf-8' ? 'rfc822' : type}; ${address}`;
  let out = '';
  for (const ch of address.slice(0, 1000)) {
    const cp = ch.codePointAt(0)!;
    const isPlain = cp > 0x20 && cp < 0x7f && ch !== '\\';
    const isUnicodeText = isGlobal && cp > 0x9f && !/[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\u2028\u2029]/.test(ch);
    out += isPlain || isUnicodeText ? ch : `\\x{${cp.toString(16).toUpperCase().padStart(2, '0')}}`;
  }
  return `utf-8; ${out}`;
}

/** The ORCPT address as decoded from xtext (one char per octet): back to a string when it is UTF-8. */
function orcptText(decoded: string): string {
  const bytes = Buffer.from(decoded, 'latin1');
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return decoded;
  }
}

/** ENVID (RFC 3464 2.2.1): as sent when printable ASCII, else xtext-encoded so nothing unprintable gets in. */
function envidValue(envid: string): string {
  if (/^[\x21-\x7e]+$/.test(envid)) return envid;
  let out = '';
  for (const b of Buffer.from(envid, 'latin1')) out += b < 0x21 || b > 0x7e || b === 0x2b || b === 0x3d ? `+${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b);
  return out;
}

function diagnostic(r: DsnRecipient, isGlobal: boolean): string | null {
  if (r.reply === null) return null;
  const enhanced = r.reply.enhanced !== null && STATUS.test(r.reply.enhanced) ? ` ${r.reply.enhanced}` : '';
  const text = clean(r.reply.lines.join(' '), isGlobal, MAX_DIAGNOSTIC_CHARS);
  // RFC 3464 2.3.6: "smtp" for a reply an SMTP or LMTP peer gave; our own reasons are ours.
  const type = r.remoteMta === null ? 'X-Portcullis' : 'smtp';
  return `${type}; ${String(r.reply.code).slice(0, 3)}${enhanced}${text === '' ? '' : ` ${text}`}`;
}

/** Host names as DSN fields: "dns; host" (RFC 3464 2.2.2, 2.3.5); anything else reduced to printable. */
function mtaField(host: string): string {
  return `dns; ${clean(host, false, 255).replace(/[\s;]/g, '') || 'unknown'}`;
}

function field(name: string, value: string): string {
  return `${foldField(`${name}: ${value}`)}\r\n`;
}

/** Word-wraps human text at about 76 columns (long words are cut to stay within 998 octets). */
function wrap(text: string): string {
  const words = text.split(' ').filter((w) => w !== '').flatMap((w) => (w.length > 500 ? w.match(/.{1,500}/gu)! : [w]));
  const lines: string[] = [];
  let line = '';
  for (const w of words) {
    if (line !== '' && line.length + 1 + w.length > TEXT_WRAP_COLUMNS) {
      lines.push(line);
      line = w;
    } else line = line === '' ? w : `${line} ${w}`;
  }
  if (line !== '') lines.push(line);
  return lines.map((l) => `${l}\r\n`).join('');
}

function headerSection(content: Buffer): Buffer {
  const end = content.indexOf('\r\n\r\n');
  if (end >= 0) return content.subarray(0, end + 2);
  return content.length === 0 || content.subarray(-2).equals(Buffer.from('\r\n')) ? content : Buffer.concat([content, Buffer.from('\r\n')]);
}

function hasLongLine(bytes: Buffer): boolean {
  let start = 0;
  for (;;) {
    const i = bytes.indexOf('\r\n', start);
    if ((i < 0 ? bytes.length : i) - start > MAX_LINE_OCTETS) return true;
    if (i < 0) return false;
    start = i + 2;
  }
}

function hasBareLineEnding(bytes: Buffer): boolean {
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0x0a && bytes[i - 1] !== 0x0d) return true;
    if (bytes[i] === 0x0d && bytes[i + 1] !== 0x0a) return true;
    if (bytes[i] === 0) return true;
  }
  return false;
}

function has8bit(bytes: Buffer): boolean {
  for (const b of bytes) if (b > 0x7f) return true;
  return false;
}

const SUBJECTS: Record<DsnAction, string> = {
  failed: 'Delivery failure notice',
  delayed: 'Delivery delay notice (no action needed yet)',
  delivered: 'Delivery success notice',
  relayed: 'Delivery notice: relayed onwards',
};

const INTROS: Record<DsnAction, string> = {
  failed: 'Your message could not be delivered to the recipients below, and no further attempts will be made.',
  delayed: 'Your message has not been delivered yet to the recipients below. The mail system keeps trying; you need not resend it now.',
  delivered: 'Your message was delivered to the recipients below.',
  relayed: 'Your message was passed on to the recipients\' next mail system, which does not send delivery notices; you will not hear more from it.',
};

/** The first action of these that any reported recipient has decides the subject. */
const ORDER: readonly DsnAction[] = ['failed', 'delayed', 'relayed', 'delivered'];

/**
 * The DSN for one event of one message, or null when none is due: the message came from the null
 * reverse-path (a DSN is never answered, RFC 3461 6.2 and RFC 5321 4.5.5) or no recipient's
 * NOTIFY asks for it. Returned content (RFC 3461 4.3): with RET=HDRS or a report without a
 * failure, the header section; with RET=FULL, the whole message; without RET, the whole message
 * up to `fullReturnMaxBytes` (default 50,000 octets), else the header section. A body that could
 * not be returned intact (binary, lines over 998 octets, bare line endings) is returned as its header section.
 */
export function composeDsn(input: DsnInput): ComposedDsn | null {
  if (input.reversePath === '') return null;
  const reported = input.recipients.flatMap((r, i) => (wantsDsn(r.notify, r.action) ? [i] : []));
  if (reported.length === 0) return null;
  const recipients = reported.map((i) => input.recipients[i]);
  const isGlobal = input.smtputf8;
  const hasFailure = recipients.some((r) => r.action === 'failed');
  const mainAction = ORDER.find((a) => recipients.some((r) => r.action === a))!;

  // What we return.
  const limit = input.fullReturnMaxBytes ?? DSN_FULL_RETURN_MAX_BYTES;
  let returned: 'full' | 'headers' = !hasFailure || input.ret === 'HDRS' ? 'headers' : input.ret === 'FULL' || input.content.length <= limit ? 'full' : 'headers';
  if (returned === 'full' && (input.bodyType === 'BINARYMIME' || hasLongLine(input.content) || hasBareLineEnding(input.content))) returned = 'headers';
  let returnedBytes = returned === 'full' ? input.content : headerSection(input.content);
  if (returned === 'headers' && (hasLongLine(returnedBytes) || hasBareLineEnding(returnedBytes))) returnedBytes = Buffer.alloc(0);
  const returnedIs8bit = has8bit(returnedBytes);

  // The human-readable part (RFC 6522 3: first).
  let human = wrap(`This is the mail system at ${clean(input.reportingMta, false, 255)}.`);
  human += '\r\n';
  human += wrap(INTROS[mainAction]);
  for (const action of ORDER) {
    const group = recipients.filter((r) => r.action === action);
    if (group.length === 0 || action === mainAction) continue;
    human += '\r\n' + wrap(`Other recipients: ${INTROS[action]}`);
  }
  for (const r of recipients) {
    human += '\r\n';
    const reply = r.reply === null ? '' : ` ${r.reply.code}${r.reply.enhanced === null ? '' : ` ${r.reply.enhanced}`} ${r.reply.lines.join(' ')}`;
    const host = r.remoteMta === null ? '' : ` (from ${r.remoteMta})`;
    human += wrap(clean(`<${r.address}>: ${r.action}${host}:${reply}`, isGlobal, MAX_DIAGNOSTIC_CHARS + 600));
    if (r.action === 'delayed' && r.willRetryUntilMs != null) human += wrap(`Delivery will be tried until ${formatRfc5322Date(r.willRetryUntilMs)}.`);
  }
  human += '\r\n' + wrap(`Queue id of your message: ${clean(input.queueId, false, 100)}; it arrived ${formatRfc5322Date(input.arrivalMs)}.`);
  if (returned === 'headers' && hasFailure) human += wrap('Only the header section of your message is returned below.');
  const humanIs8bit = /[^\x00-\x7f]/.test(human);

  // The machine-readable part (RFC 3464 2.1: per-message fields, a blank line, then one block per recipient).
  let status = field('Reporting-MTA', mtaField(input.reportingMta));
  status += field('X-Portcullis-Queue-ID', clean(input.queueId, false, 100).replace(/\s/g, '') || 'unknown');
  if (input.envid !== undefined && input.envid !== '') status += field('Original-Envelope-Id', envidValue(input.envid));
  status += field('Arrival-Date', formatRfc5322Date(input.arrivalMs));
  for (const r of recipients) {
    status += '\r\n';
    if (r.orcpt !== undefined) status += field('Original-Recipient', addressField(orcptText(r.orcpt.address), isGlobal, r.orcpt.addrType));
    status += field('Final-Recipient', addressField(r.address, isGlobal));
    status += field('Action', r.action);
    status += field('Status', statusOf(r));
    if (r.remoteMta !== null) status += field('Remote-MTA', mtaField(r.remoteMta));
    const diag = diagnostic(r, isGlobal);
    if (diag !== null) status += field('Diagnostic-Code', diag);
    if (r.lastAttemptMs !== null) status += field('Last-Attempt-Date', formatRfc5322Date(r.lastAttemptMs));
    if (r.action === 'delayed' && r.willRetryUntilMs != null) status += field('Will-Retry-Until', formatRfc5322Date(r.willRetryUntilMs));
  }
  const statusIs8bit = /[^\x00-\x7f]/.test(status);

  const is8bit = humanIs8bit || statusIs8bit || returnedIs8bit;
  const boundary = boundaryFor(input, [Buffer.from(human, 'utf8'), Buffer.from(status, 'utf8'), returnedBytes]);
  const msgIdLocal = (input.messageIdLocal ?? `${input.queueId}.dsn.${input.nowMs}`).replace(/[^A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]/g, '') || 'dsn';
  const host = clean(input.reportingMta, false, 255).replace(/[^A-Za-z0-9.-]/g, '') || 'localhost';
  const to = clean(input.reversePath, isGlobal, 600).replace(/[<>]/g, '');

  let head = '';
  head += field('From', `Mail Delivery System <MAILER-DAEMON@${host}>`);
  head += field('To', `<${to}>`);
  head += field('Subject', SUBJECTS[mainAction]);
  head += field('Date', formatRfc5322Date(input.nowMs));
  head += field('Message-ID', `<${msgIdLocal}@${host}>`);
  // RFC 3834 5: automatic responses are marked so that responders do not answer them.
  head += field('Auto-Submitted', 'auto-replied');
  head += field('MIME-Version', '1.0');
  head += `Content-Type: multipart/report; report-type=${isGlobal ? 'global-delivery-status' : 'delivery-status'};\r\n\tboundary="${boundary}"\r\n`;
  if (is8bit) head += field('Content-Transfer-Encoding', '8bit');
  head += '\r\n';
  head += 'This is a MIME-encapsulated delivery status notification.\r\n';

  const parts: Buffer[] = [Buffer.from(head, 'utf8')];
  const part = (headers: string, body: Buffer): void => {
    parts.push(Buffer.from(`\r\n--${boundary}\r\n${headers}\r\n`, 'utf8'), body);
  };
  part(
    `Content-Description: Notification\r\nContent-Type: text/plain; charset=${humanIs8bit ? 'utf-8' : 'us-ascii'}\r\nContent-Transfer-Encoding: ${humanIs8bit ? '8bit' : '7bit'}\r\n`,
    Buffer.from(human, 'utf8'),
  );
  // RFC 6533 3: message/global-delivery-status carries UTF-8 fields; message/delivery-status is ASCII.
  part(
    `Content-Description: Delivery report\r\nContent-Type: ${isGlobal ? 'message/global-delivery-status' : 'message/delivery-status'}\r\n${statusIs8bit ? 'Content-Transfer-Encoding: 8bit\r\n' : ''}`,
    Buffer.from(status, 'utf8'),
  );
  const contentType = returned === 'full' ? (isGlobal ? 'message/global' : 'message/rfc822') : isGlobal ? 'message/global-headers' : 'text/rfc822-headers';
  const description = returned === 'full' ? 'Returned message' : 'Returned message header section';
  const body = returned === 'full' || returnedBytes.length === 0 || returnedBytes.subarray(-2).toString() === '\r\n' ? returnedBytes : Buffer.concat([returnedBytes, Buffer.from('\r\n')]);
  part(`Content-Description: ${description}\r\nContent-Type: ${contentType}\r\n${returnedIs8bit ? 'Content-Transfer-Encoding: 8bit\r\n' : ''}`, body);
  const endsWithCrlf = body.length === 0 || body.subarray(-2).toString() === '\r\n';
  parts.push(Buffer.from(`${endsWithCrlf ? '' : '\r\n'}\r\n--${boundary}--\r\n`, 'utf8'));

  return {
    reversePath: '',
    recipient: input.reversePath,
    smtputf8: isGlobal,
    bodyType: is8bit ? '8BITMIME' : '7BIT',
    reported,
    returned: returnedBytes.length > 0 ? returned : 'headers',
    bytes: Buffer.concat(parts),
  };
}

/** A boundary that occurs in no part (RFC 2046 5.1.1): derived from the message, checked against every part, never random. */
function boundaryFor(input: DsnInput, parts: readonly Buffer[]): string {
  const seed = createHash('sha256').update(input.queueId).update(String(input.nowMs)).update(parts[parts.length - 1]).digest('hex').slice(0, 24);
  for (let i = 0; ; i++) {
    const b = `=_portcullis-dsn-${seed}${i === 0 ? '' : `-${i}`}`;
    if (!parts.some((p) => p.includes(b))) return b;
  }
}
