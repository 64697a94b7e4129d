// Reply type, wire formatting and the one catalogue of reply texts the client sees: the
// protocol's replies and, in their own section at the end, the policy pipeline's and checks'.
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
  /** The verbs the server offers (AUTH is parsed but not offered yet); a test holds it to COMMAND_FACTS. */
  help: reply(214, '2.0.0', 'Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY EXPN HELP STARTTLS'),
  cannotVrfy: reply(252, '2.5.0', 'Cannot VRFY user, but will accept message and attempt delivery'),

  // 4xx
  shuttingDown: reply(421, '4.3.2', 'Service shutting down, closing connection'),
  internalError: reply(421, '4.3.0', 'Internal error, closing connection'),
  tooManyErrors: reply(421, '4.7.0', 'Too many errors, closing connection'),
  tooManyTransactions: reply(421, '4.7.0', 'Too many transactions in one session, closing connection'),
  tooManyRefusals: reply(421, '4.7.0', 'Too many refusals in one session, closing connection'),
  timeout: reply(421, '4.4.2', 'Timeout, closing connection'),
  sessionTooLong: reply(421, '4.4.2', 'Session too long, closing connection'),
  // Admission (server/admission.ts), before any session: RFC 3463 4.7.0, a policy status the
  // client may retry later; the limit that fired is logged, never sent.
  tooManyConnections: reply(421, '4.7.0', 'Too many connections, try again later'),
  refusedSessionOver: reply(421, '4.7.0', 'Service refused, closing connection'),
  // Pregreet (docs/defense.md): the client talked before the greeting. RFC 3463 5.5.1 / 4.7.0.
  pregreetRejected: reply(554, '5.5.1', 'Protocol error: data sent before the greeting'),
  pregreetDisconnected: reply(421, '4.7.0', 'Protocol error: data sent before the greeting, closing connection'),
  tooManyIdleCommands: reply(421, '4.7.0', 'Too many commands without a transaction, closing connection'),
  bdatUnparsable: reply(421, '4.5.0', 'Malformed BDAT: chunk boundary unknown, closing connection'),
  tooManyRecipients: reply(452, '4.5.3', 'Too many recipients'),
  storageFailed: reply(451, '4.3.0', 'Temporary failure storing the message, try again later'),
  spoolFull: reply(452, '4.3.1', 'Insufficient system storage, try again later'),
  localError: reply(451, '4.3.0', 'Temporary local problem, try again later'),

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
  /** RFC 5321 6.3 (hop count), RFC 3463 5.4.6 (routing loop detected). */
  tooManyHops: reply(554, '5.4.6', 'Too many hops: mail loop detected'),
  bareLineEndingData: reply(550, '5.6.0', 'Message contains bare CR, bare LF or NUL; only CRLF line endings are allowed'),
  dataLineTooLong: reply(550, '5.6.0', 'Message contains a line longer than the allowed maximum'),
  relayDenied: reply(554, '5.7.1', 'Relay access denied'),
  /** RFC 3463 X.4.4: the routing table delivers this domain nowhere. */
  unroutable: reply(550, '5.4.4', 'Recipient address rejected: no route to this domain'),

  // --- Policy: every reply of the policy pipeline and its checks (src/policy/), one text per
  // condition. Deliberate exception to "generic text": the DNS-list and SPF replies name the
  // list, the domain and the client address (common MTA practice, so the sender's operator
  // knows where to look; docs/policy.md "Replies"). The callers pass those parts sanitized
  // (host names and addresses only, printable ASCII, bounded); reasons still go to the log only.
  // Our bug (a check threw) or our state store away is `localError` above (451 4.3.0).
  /** A check ran out of its time budget (RFC 3463 4.4.3, directory server failure). */
  policyTimedOut: reply(451, '4.4.3', 'Temporary local problem, try again later'),
  unknownRecipient: reply(550, '5.1.1', 'Recipient address rejected: user unknown'),
  heloNotFqdn: reply(550, '5.7.1', 'HELO/EHLO name rejected: use your fully-qualified domain name'),
  heloUnresolvable: reply(550, '5.7.1', 'HELO/EHLO name rejected: it has no address or MX record'),
  heloLookupFailed: reply(450, '4.7.1', 'HELO/EHLO name cannot be looked up now, try again later'),
  heloOurName: reply(550, '5.7.1', 'HELO/EHLO name rejected: that is this server\'s name'),
  greylisted: reply(451, '4.7.1', 'Greylisted, please try again later'),
  /** BATV: a message from <> to an untagged, expired or forged return address (RFC 3463 5.7.1, delivery not authorized). */
  batvRefused: reply(550, '5.7.1', 'Bounce rejected: not sent to a valid return address of this domain'),
  /**
   * A client on DNS block lists: the lists that counted against it. At the connect stage a
   * temporary refusal is 421 (RFC 5321 3.1 and 4.2.5: a greeting is 220, 554, or 421, which
   * closes the connection); elsewhere it is 450.
   */
  dnsblListed: (action: 'reject' | 'tempfail', stage: 'connect' | 'rcpt', address: string, zones: readonly string[]) => {
    const text = `Service unavailable; client [${address}] blocked using ${zones.join(', ')}`;
    return action === 'reject' ? reply(554, '5.7.1', text) : reply(stage === 'connect' ? 421 : 450, '4.7.1', text);
  },
  // SPF (RFC 7372 3.2): X.7.23 when the result is not accepted by local policy, X.7.24 when
  // evaluation ended in an error; 451 only with X.7.24, the one SPF code registered for 451.
  spfFailed: (domain: string, ip: string) => reply(550, '5.7.23', `SPF validation failed: ${domain} does not designate ${ip} as permitted sender`),
  spfRefused: (result: string, domain: string, ip: string) => reply(550, '5.7.23', `SPF validation failed: result ${result} for ${domain} and ${ip} is not accepted here`),
  spfPermerror: (domain: string) => reply(550, '5.7.24', `SPF validation error: the SPF record of ${domain} is invalid`),
  spfTemperrorRefused: (domain: string) => reply(550, '5.7.24', `SPF validation error: the SPF record of ${domain} could not be looked up`),
  spfTryLater: reply(451, '4.7.24', 'SPF validation error, try again later'),
  spfDeferred: (result: string, domain: string) => reply(451, '4.7.24', `SPF validation gave ${result} for ${domain}, try again later`),
  // DMARC (RFC 7489 6.6.3, dmarc.enforce): the sender domain's p=reject; no domain, no internals.
  dmarcRejected: reply(550, '5.7.1', 'Message refused: it fails the DMARC policy of its From domain'),
  // Milters (docs/filters.md "Milter"): a filter's own SMFIR_REPLYCODE text is used when valid
  // (4xx/5xx, sanitized); these are for its plain reject/tempfail and for a filter that failed.
  // At connect a refusal is 554 or 421 (RFC 5321 3.1: a greeting is 220, 554 or 421).
  milterRejected: reply(550, '5.7.1', 'Rejected by a content filter'),
  milterTempfailed: reply(451, '4.7.1', 'Temporarily refused by a content filter, try again later'),
  milterUnavailable: reply(451, '4.7.1', 'Content filter unavailable, try again later'),
  // RFC 5321 3.1: 554 in place of the greeting (access.block); RFC 3463 5.7.1: not authorised.
  connectionBlocked: reply(554, '5.7.1', 'Connection refused by policy'),
  // 554 mode (docs/defense.md): every command but QUIT after a connect-stage refusal. RFC 3463
  // 5.7.0: a policy refusal, not a sequence error (5.5.1), so the client does not retry the verb.
  refusedAtConnect: reply(503, '5.7.0', 'Service refused; only QUIT is accepted'),
  milterRejectedAtConnect: reply(554, '5.7.1', 'Rejected by a content filter'),
  milterTempfailedAtConnect: reply(421, '4.7.1', 'Temporarily refused by a content filter, try again later'),
  // Content scanners (clamd, spamd, rspamd; docs/filters.md): what they found, the signature or
  // the score, goes to the log only.
  contentRejected: reply(554, '5.7.1', 'Message content rejected'),
  contentTempfailed: reply(451, '4.7.1', 'Message content temporarily refused, try again later'),
  scannerUnavailable: reply(451, '4.7.1', 'Content scanner unavailable, try again later'),
  tooLargeToScan: reply(451, '4.3.4', 'Message too large for the content scanner, try again later'),
} as const;

/**
 * Delivery results that we write ourselves (no next hop gave them): never sent in an SMTP
 * session, but recorded per recipient and quoted in DSNs (Diagnostic-Code), so they follow the
 * same rule: generic text, no paths or internal reasons (those go to the log).
 */
export const DELIVERY_REPLY = {
  /** Routing table `refuse` (RFC 3463 X.4.4: unable to route). */
  routeRefused: reply(550, '5.4.4', 'No route to this destination: delivery refused by the routing table'),
  /** Routing table `discard`: taken and thrown away, as Postfix's discard transport. */
  discarded: reply(250, '2.0.0', 'Discarded by the routing table'),
  // MX resolution (RFC 5321 5.1).
  /** RFC 7505 4.1; 5.1.10 registered by RFC 7505. */
  nullMx: (domain: string) => reply(556, '5.1.10', `Recipient address has null MX: ${domain} accepts no mail`),
  noSuchDomain: (domain: string) => reply(550, '5.1.2', `Recipient domain not found: ${domain} does not exist`),
  noAddress: (domain: string) => reply(550, '5.1.2', `Recipient domain has no MX and no address: ${domain}`),
  noMxAddress: (domain: string) => reply(550, '5.4.4', `No address for any MX host of ${domain}`),
  /** RFC 5321 5.1: we are the best MX left; RFC 3463 5.4.6 routing loop. */
  mxLoop: (domain: string) => reply(554, '5.4.6', `Mail for ${domain} loops back to myself`),
  dnsTemporary: (domain: string, what: string) => reply(451, '4.4.3', `DNS lookup of ${what} failed temporarily for ${domain}`),
  // Maildir.
  maildirDelivered: reply(250, '2.0.0', 'Delivered to Maildir'),
  badMailbox: reply(550, '5.1.3', 'Recipient address cannot name a Maildir'),
  diskFull: reply(452, '4.3.1', 'Insufficient system storage'),
  mailboxFull: reply(452, '4.2.2', 'Mailbox full'),
  maildirNotWritable: reply(451, '4.3.0', 'Maildir not writable'),
  localError: reply(451, '4.3.0', 'Local error writing to Maildir'),
  interrupted: reply(451, '4.3.2', 'Delivery interrupted by shutdown'),
  // The queue (src/queue/manager.ts).
  queueContentUnreadable: reply(451, '4.3.0', 'Queued message cannot be read from the spool'),
  queueLocalError: reply(451, '4.3.0', 'Local error in delivery'),
  queueNoResult: reply(451, '4.3.0', 'Delivery gave no result for this recipient'),
  /** A dead destination (repeated failures): deferred without an attempt (RFC 3463 X.4.1). */
  destinationSuspended: (destination: string) => reply(451, '4.4.1', `Delivery to ${destination} temporarily suspended after repeated failures`),
  bouncedByOperator: reply(550, '5.0.0', 'Returned to sender by the mail system operator'),
} as const;
