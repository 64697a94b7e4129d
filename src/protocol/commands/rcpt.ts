// RCPT TO: sequence, syntax, recipient limit and relay control (check); apply adds the recipient.
// Never accepts mail for a foreign domain from a client outside relay.networks.
// RFC 5321 4.1.1.3, 4.5.1 (Postmaster), 4.5.3.1.8 (recipients), 3.6.2 / 7.1 (relaying),
// RFC 3461 4.1-4.2 (NOTIFY, ORCPT).

import { decodeXtext, formatMailbox, parsePath } from '../address.ts';
import { parseParams } from '../command.ts';
import { REPLY, type Reply } from '../replies.ts';
import type { MachineConfig } from '../machine-config.ts';
import type { DsnNotify, SessionSecurity, Transaction, TransactionRecipient, TransactionSlot } from '../session.ts';

const POSTMASTER = /^ *<postmaster>/i;
/** %-hack, bang paths and an @ inside a quoted local part. */
const ROUTING_IN_LOCAL_PART = /[%!@]/;

export type RcptCheck =
  | { ok: true; recipient: TransactionRecipient }
  | { ok: false; reply: Reply; /** counts toward the session's error limit */ isError: boolean };

function parseNotify(value: string | null): DsnNotify | null {
  if (value === null) return null;
  const items = value.toUpperCase().split(',');
  if (items.length === 1 && items[0] === 'NEVER') return 'NEVER';
  const out: Array<'SUCCESS' | 'FAILURE' | 'DELAY'> = [];
  for (const item of items) {
    // RFC 3461 4.1: NEVER cannot be combined; each keyword at most once.
    if ((item !== 'SUCCESS' && item !== 'FAILURE' && item !== 'DELAY') || out.includes(item)) return null;
    out.push(item);
  }
  return out;
}

function parseOrcpt(value: string | null): { addrType: string; address: string } | null {
  if (value === null) return null;
  const semi = value.indexOf(';');
  if (semi <= 0) return null;
  const addrType = value.slice(0, semi);
  if (!/^[A-Za-z0-9][A-Za-z0-9-]*$/.test(addrType)) return null;
  const address = decodeXtext(value.slice(semi + 1));
  if (address === null || address === '' || address.length > 500) return null;
  return { addrType: addrType.toLowerCase(), address };
}

export function checkRcpt(cfg: MachineConfig, session: SessionSecurity, slot: TransactionSlot, argument: string): RcptCheck {
  if (slot === null || slot.kind !== 'open') return { ok: false, reply: REPLY.needMail, isError: true };
  const txn = slot;
  let recipient: TransactionRecipient;
  let rest: string;
  const pm = POSTMASTER.exec(argument);
  if (pm !== null) {
    // RFC 5321 4.5.1: "<Postmaster>" without a domain must be accepted.
    recipient = { mailbox: 'postmaster', address: 'postmaster' };
    rest = argument.slice(pm[0].length);
  } else {
    const path = parsePath(argument, { allowNull: false, allowUtf8: txn.smtputf8 });
    if (!path.ok) {
      return { ok: false, reply: path.reason === 'utf8' ? REPLY.utf8NotRequested : REPLY.badRecipientSyntax, isError: true };
    }
    // path.mailbox is never null here: allowNull is false.
    const mailbox = path.mailbox!;
    recipient = { mailbox, address: formatMailbox(mailbox) };
    rest = path.rest;
  }
  const parsed = parseParams(rest);
  if (!parsed.ok) {
    return {
      ok: false,
      reply: parsed.duplicate ? REPLY.duplicateParameter(parsed.duplicate) : REPLY.syntax('RCPT TO:<address> [parameters]'),
      isError: true,
    };
  }
  for (const [key, value] of parsed.params) {
    if (session.helo?.verb !== 'EHLO') return { ok: false, reply: REPLY.unknownParameter(key), isError: true };
    if (key === 'NOTIFY') {
      const notify = parseNotify(value);
      if (notify === null) return { ok: false, reply: REPLY.badParameter(key), isError: true };
      recipient.notify = notify;
    } else if (key === 'ORCPT') {
      const orcpt = parseOrcpt(value);
      if (orcpt === null) return { ok: false, reply: REPLY.badParameter(key), isError: true };
      recipient.orcpt = orcpt;
    } else {
      return { ok: false, reply: REPLY.unknownParameter(key), isError: true };
    }
  }
  // RFC 5321 4.5.3.1.8: past the limit, 452 tells the client to send the rest later.
  if (txn.recipients.length >= cfg.maxRecipients) return { ok: false, reply: REPLY.tooManyRecipients, isError: false };
  // Security: the relay decision looks at where the path really ends: a source route was
  // already stripped by parsePath, so <@local:user@elsewhere> is judged as user@elsewhere.
  const mailbox = recipient.mailbox;
  const isLocal = mailbox === 'postmaster' || (!mailbox.isAddressLiteral && cfg.localDomains.has(mailbox.domain));
  if (!isLocal && !session.isRelayClient) return { ok: false, reply: REPLY.relayDenied, isError: true };
  // Security: the classic open-relay tricks hide a second destination in a local part of a local
  // domain ("user%other@local", "other!user@local", "\"user@other\"@local"). Some delivery
  // agents would route on them; a client that may not relay gets no such address accepted.
  if (mailbox !== 'postmaster' && !session.isRelayClient && ROUTING_IN_LOCAL_PART.test(mailbox.localPart)) {
    return { ok: false, reply: REPLY.relayDenied, isError: true };
  }
  // What the routing table would only bounce (a "refuse" route) is refused here instead.
  if (cfg.isRoutable !== undefined && !cfg.isRoutable(mailbox === 'postmaster' ? 'postmaster' : `${mailbox.localPart}@${mailbox.domain}`)) {
    return { ok: false, reply: REPLY.unroutable, isError: true };
  }
  return { ok: true, recipient };
}

export function applyRcpt(session: SessionSecurity, txn: Transaction, recipient: TransactionRecipient): Reply {
  txn.recipients.push(recipient);
  session.counters.recipients++;
  return REPLY.recipientOk;
}
