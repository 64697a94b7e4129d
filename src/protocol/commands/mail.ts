// MAIL FROM: sequence and syntax check (check), then the new Transaction (apply).
// Never touches SessionSecurity beyond the transaction counter; never decides policy.
// RFC 5321 4.1.1.2, RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8), RFC 3461 4.3-4.4 (RET, ENVID).

import { decodeXtext, parsePath, type Mailbox } from '../address.ts';
import { parseParams } from '../command.ts';
import { REPLY, type Reply } from '../replies.ts';
import type { MachineConfig } from '../machine-config.ts';
import type { SessionSecurity, Transaction, TransactionSlot } from '../session.ts';

export type MailPlan = Omit<Transaction, 'kind' | 'seq' | 'recipients' | 'usedBdat' | 'addedHeaders' | 'reader' | 'content' | 'spilled' | 'headerProbeBytes' | 'reservedBytes'>;

const MAX_ENVID = 100; // RFC 3461 4.4

export function checkMail(
  cfg: MachineConfig,
  session: SessionSecurity,
  slot: TransactionSlot,
  argument: string,
  isSpoolLow = false,
): { ok: true; plan: MailPlan } | { ok: false; reply: Reply; isFatal?: boolean; /** our condition, not the client's error */ isNotAnError?: boolean } {
  if (session.helo === null) return { ok: false, reply: REPLY.heloFirst };
  // The remains of a refused BDAT message are no transaction: a new MAIL starts afresh.
  if (slot !== null && slot.kind === 'open') return { ok: false, reply: REPLY.nestedMail };
  if (session.counters.transactions >= cfg.maxTransactions) {
    return { ok: false, reply: REPLY.tooManyTransactions, isFatal: true };
  }
  // RFC 5321 4.5.3.1.10 / RFC 3463 4.3.1: out of storage is a temporary condition; refusing at
  // MAIL spares the client the upload of a body that could not be stored.
  if (isSpoolLow) return { ok: false, reply: REPLY.spoolFull, isNotAnError: true };
  const path = parsePath(argument, { allowNull: true, allowUtf8: true });
  if (!path.ok) return { ok: false, reply: REPLY.badSenderSyntax };
  const parsed = parseParams(path.rest);
  if (!parsed.ok) {
    return { ok: false, reply: parsed.duplicate ? REPLY.duplicateParameter(parsed.duplicate) : REPLY.syntax('MAIL FROM:<address> [parameters]') };
  }
  let body: MailPlan['body'] = '7BIT';
  let smtputf8 = false;
  let declaredSize: number | null = null;
  let ret: MailPlan['ret'];
  let envid: string | undefined;
  for (const [key, value] of parsed.params) {
    // RFC 1869 4.5 / RFC 5321 4.1.1.2: parameters only after EHLO.
    if (session.helo.verb !== 'EHLO') return { ok: false, reply: REPLY.unknownParameter(key) };
    switch (key) {
      case 'SIZE':
        if (value === null || !/^\d{1,20}$/.test(value)) return { ok: false, reply: REPLY.badParameter(key) };
        declaredSize = Number(value);
        // RFC 1870 6.2: refuse at MAIL when the declared size is over the limit.
        if (declaredSize > cfg.maxMessageBytes) return { ok: false, reply: REPLY.messageTooBig };
        break;
      case 'BODY': {
        const v = value?.toUpperCase();
        if (v !== '7BIT' && v !== '8BITMIME') return { ok: false, reply: REPLY.badParameter(key) };
        body = v;
        break;
      }
      case 'SMTPUTF8':
        if (value !== null) return { ok: false, reply: REPLY.badParameter(key) };
        smtputf8 = true;
        break;
      case 'RET': {
        const v = value?.toUpperCase();
        if (v !== 'FULL' && v !== 'HDRS') return { ok: false, reply: REPLY.badParameter(key) };
        ret = v;
        break;
      }
      case 'ENVID': {
        const decoded = value === null ? null : decodeXtext(value);
        if (decoded === null || value === null || value.length > MAX_ENVID) return { ok: false, reply: REPLY.badParameter(key) };
        envid = decoded;
        break;
      }
      default:
        return { ok: false, reply: REPLY.unknownParameter(key) };
    }
  }
  const reversePath: Mailbox | null = path.mailbox;
  // RFC 6531 3.4: a UTF-8 address only in a transaction that asked for SMTPUTF8.
  if (reversePath?.isUtf8 && !smtputf8) return { ok: false, reply: REPLY.utf8NotRequested };
  return { ok: true, plan: { reversePath, body, smtputf8, declaredSize, ret, envid } };
}

/** The transaction a MAIL command would open (policy sees it before it is applied). */
export function newTransaction(session: SessionSecurity, plan: MailPlan): Transaction {
  return { kind: 'open', ...plan, seq: session.counters.transactions + 1, recipients: [], usedBdat: false, addedHeaders: [], reader: { kind: 'command' }, content: null, spilled: null, headerProbeBytes: 0, reservedBytes: 0 };
}

export function applyMail(session: SessionSecurity, txn: Transaction): { slot: TransactionSlot; reply: Reply } {
  session.counters.transactions = txn.seq;
  return { slot: txn, reply: REPLY.senderOk };
}
