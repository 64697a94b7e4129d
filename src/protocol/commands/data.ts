// DATA: the sequence check, the switch to the data reader, and the end-of-content check shared
// with BDAT (a message refused for its content is refused after its real end).
// Never decides where the data ends (framing.ts does); never keeps a refused body.
// RFC 5321 4.1.1.4 (DATA), 3.3 (554 with no valid recipient, RFC 2920 3.1), RFC 3030 3
// (no DATA after BDAT in one transaction).

import { ContentScanner } from '../framing.ts';
import type { MachineConfig } from '../machine-config.ts';
import { REPLY, type Reply } from '../replies.ts';
import type { Transaction, TransactionSlot } from '../session.ts';

export function checkData(slot: TransactionSlot): { ok: true; txn: Transaction } | { ok: false; reply: Reply } {
  if (slot === null || slot.kind !== 'open') return { ok: false, reply: REPLY.needMail };
  if (slot.usedBdat) return { ok: false, reply: REPLY.bdatThenData };
  // RFC 2920 3.1: with no valid recipient, DATA gets 554 (or 503).
  if (slot.recipients.length === 0) return { ok: false, reply: REPLY.noValidRecipients };
  return { ok: true, txn: slot };
}

/** The transaction now reads dot-stuffed data; the framer is to be pointed at the scanner. */
export function applyData(cfg: MachineConfig, txn: Transaction): ContentScanner {
  const scanner = newContentScanner(cfg, true);
  txn.content = scanner;
  txn.reader = { kind: 'data' };
  return scanner;
}

export function newContentScanner(cfg: MachineConfig, isDotStuffed: boolean): ContentScanner {
  return new ContentScanner({
    isDotStuffed,
    maxBytes: cfg.maxMessageBytes,
    maxLineBytes: cfg.maxTextLineBytes,
    isNormalizing: cfg.isNormalizingBareLineEndings,
  });
}

/**
 * Security: a body with bare CR/LF or NUL (smuggling), an over-long line or too many octets is
 * refused after the real end of data, with the reply for its worst defect; null when it may go on.
 */
export function contentRefusal(scanner: ContentScanner): Reply | null {
  if (!scanner.isRefused) return null;
  const d = scanner.defects;
  if (d.tooBig) return REPLY.messageTooBig;
  if (d.headerTooBig) return REPLY.headerTooBig;
  if (d.tooManyHops) return REPLY.tooManyHops;
  return d.longLine ? REPLY.dataLineTooLong : REPLY.bareLineEndingData;
}
