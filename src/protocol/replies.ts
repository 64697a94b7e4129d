// Reply type, wire formatting and the one catalogue of reply texts the client sees.
// Never formats a reason meant for the log into a reply: precise reasons go to the log only.
// RFC 5321 4.2 (reply codes), RFC 3463 / RFC 2034 (enhanced status codes).

export type Reply = {
  code: number;
  /** RFC 3463 class.subject.detail, or null where RFC 2034 3 exempts the reply (220, EHLO 250). */
  enhanced: string | null;
  lines: readonly string[];
};

export function reply(code: number, enhanced: string | null, ...lines: string[]): Reply {
  return { code, enhanced, lines: lines.length > 0 ? lines : [''] };
}

/** Wire form: every line carries the code (and the enhanced code, RFC 2034 3), CRLF-terminated. */
export function formatReply(r: Reply): string {
  const prefix = r.enhanced === null ? '' : `${r.enhanced} `;
  let out = '';
  const last = r.lines.length - 1;
  for (let i = 0; i <= last; i++) {
    out += `${r.code}${i === last ? ' ' : '-'}${prefix}${r.lines[i]}\r\n`;
  }
  return out;
}

export function isPositive(r: Reply): boolean {
  return r.code < 400;
}

/** The catalogue. Tests and transcripts match these texts; keep them short (old clients). */
export const REPLY = {
  greeting: (hostname: string) => reply(220, null, `${hostname} ESMTP Portcullis`),
  ehlo: (lines: string[]) => reply(250, null, ...lines),
  helo: (hostname: string) => reply(250, null, hostname),
  ok: reply(250, '2.0.0', 'Ok'),
  senderOk: reply(250, '2.1.0', 'Sender ok'),
  recipientOk: reply(250, '2.1.5', 'Recipient ok'),
  reset: reply(250, '2.0.0', 'Reset'),
  queued: (queueId: string) => reply(250, '2.0.0', `Ok: queued as ${queueId}`),
  discarded: reply(250, '2.0.0', 'Ok: message discarded'),
  chunkOk: (octets: number) => reply(250, '2.0.0', `${octets} octets received`),
  startData: reply(354, null, 'End data with <CR><LF>.<CR><LF>'),
  startTls: reply(220, '2.0.0', 'Ready to start TLS'),
  bye: reply(221, '2.0.0', 'Bye'),
  help: reply(214, '2.0.0', 'Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS'),
  cannotVrfy: reply(252, '2.5.0', 'Cannot VRFY user, but will accept message and attempt delivery'),

  // 4xx
  shuttingDown: reply(421, '4.3.2', 'Service shutting down, closing connection'),
  internalError: reply(421, '4.3.0', 'Internal error, closing connection'),
  tooManyErrors: reply(421, '4.7.0', 'Too many errors, closing connection'),
  tooManyTransactions: reply(421, '4.7.0', 'Too many transactions in one session, closing connection'),
  tooManyRefusals: reply(421, '4.7.0', 'Too many refusals in one session, closing connection'),
  timeout: reply(421, '4.4.2', 'Timeout, closing connection'),
  bdatUnparsable: reply(421, '4.5.0', 'Malformed BDAT: chunk boundary unknown, closing connection'),
  tooManyRecipients: reply(452, '4.5.3', 'Too many recipients'),
  storageFailed: reply(451, '4.3.0', 'Temporary failure storing the message, try again later'),
  spoolFull: reply(452, '4.3.1', 'Insufficient system storage, try again later'),
  localError: reply(451, '4.3.0', 'Temporary local problem, try again later'),
  tlsUnavailable: reply(454, '4.7.0', 'TLS not available'),

  // 5xx: syntax and sequence
  unknownCommand: reply(500, '5.5.1', 'Command unrecognized'),
  lineTooLong: reply(500, '5.5.2', 'Line too long'),
  bareLineEndingCommand: reply(500, '5.5.2', 'Command line contains bare CR, bare LF or NUL'),
  syntax: (usage: string) => reply(501, '5.5.4', `Syntax: ${usage}`),
  badSenderSyntax: reply(501, '5.1.7', 'Bad sender address syntax'),
  badRecipientSyntax: reply(501, '5.1.3', 'Bad recipient address syntax'),
  utf8NotRequested: reply(553, '5.6.7', 'UTF-8 address requires the SMTPUTF8 parameter'),
  emptyHelo: (verb: string) => reply(501, '5.5.4', `Syntax: ${verb} hostname`),
  notImplemented: (verb: string) => reply(502, '5.5.1', `${verb} command is disabled`),
  heloFirst: reply(503, '5.5.1', 'Send EHLO/HELO first'),
  refusedAtConnect: reply(503, '5.5.1', 'Service refused; only QUIT is accepted'),
  nestedMail: reply(503, '5.5.1', 'Sender already specified'),
  needMail: reply(503, '5.5.1', 'Need MAIL command'),
  needRcpt: reply(503, '5.5.1', 'Need RCPT command'),
  noValidRecipients: reply(554, '5.5.1', 'No valid recipients'),
  bdatThenData: reply(503, '5.5.1', 'DATA not allowed after BDAT in the same transaction'),
  alreadyTls: reply(503, '5.5.1', 'TLS already active'),
  tlsInTransaction: reply(503, '5.5.1', 'STARTTLS not allowed during a mail transaction'),
  unknownParameter: (name: string) => reply(555, '5.5.4', `Unsupported parameter ${name}`),
  badParameter: (name: string) => reply(501, '5.5.4', `Bad value for parameter ${name}`),
  duplicateParameter: (name: string) => reply(501, '5.5.4', `Duplicate parameter ${name}`),

  // 5xx: content and policy
  messageTooBig: reply(552, '5.3.4', 'Message size exceeds fixed maximum message size'),
  headerTooBig: reply(552, '5.3.4', 'Message header section too large'),
  bareLineEndingData: reply(550, '5.6.0', 'Message contains bare CR, bare LF or NUL; only CRLF line endings are allowed'),
  dataLineTooLong: reply(550, '5.6.0', 'Message contains a line longer than the allowed maximum'),
  relayDenied: reply(554, '5.7.1', 'Relay access denied'),
} as const;
