// The Received: trace header we prepend to every accepted message, and RFC 5322 date formatting.
// Pure: time comes in as a number; never reads the clock.
// RFC 5321 4.4 (trace information), RFC 3848 / RFC 6531 4.3 (with-protocol names), RFC 5322 3.3.

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** RFC 5322 date-time in UTC, e.g. "Mon, 23 Nov 2026 19:32:46 +0000". */
export function formatRfc5322Date(ms: number): string {
  const d = new Date(ms);
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} +0000`;
}

export type ReceivedInfo = {
  heloName: string | null;
  clientAddress: string;
  hostname: string;
  isEsmtp: boolean;
  isTls: boolean;
  isUtf8: boolean;
  queueId: string;
  sessionId: string;
  /** Named in "for" only when there is exactly one (RFC 5321 4.4 warns about disclosure). */
  recipients: readonly string[];
  nowMs: number;
};

/** RFC 3848 / RFC 6531 with-protocol keyword. */
export function withProtocol(info: Pick<ReceivedInfo, 'isEsmtp' | 'isTls' | 'isUtf8'>): string {
  const base = info.isUtf8 ? 'UTF8SMTP' : info.isEsmtp ? 'ESMTP' : 'SMTP';
  if (!info.isTls) return base;
  return info.isUtf8 || info.isEsmtp ? `${base}S` : 'ESMTPS';
}

/** Printable, comment-safe rendering of the client's HELO text (it is untrusted input). */
function safeHelo(s: string | null): string {
  if (s === null || s === '') return 'unknown';
  return s.replace(/[^\x21-\x7e]/g, '?').replace(/[()\\]/g, '?').slice(0, 255);
}

export function formatReceived(info: ReceivedInfo): string {
  const literal = info.clientAddress.includes(':') ? `[IPv6:${info.clientAddress}]` : `[${info.clientAddress}]`;
  let text = `Received: from ${safeHelo(info.heloName)} (${literal})\r\n`;
  text += `\tby ${info.hostname} (Portcullis) with ${withProtocol(info)} id ${info.queueId}\r\n`;
  text += `\t(session ${info.sessionId})`;
  if (info.recipients.length === 1) text += `\r\n\tfor <${info.recipients[0]}>`;
  text += `; ${formatRfc5322Date(info.nowMs)}\r\n`;
  return text;
}
