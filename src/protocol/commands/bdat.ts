// BDAT: what a chunk is read into (the transaction's content, or nowhere with a refusal), and
// what its end means. The chunk's octets follow the command whatever the answer (RFC 3030 2), so
// a refused chunk is still read, and dropped, to keep the session in step.
// RFC 3030 2-4 (CHUNKING; 4.1: the chunks that follow a refused one get the same refusal).

import type { ContentScanner } from '../framing.ts';
import type { MachineConfig } from '../machine-config.ts';
import { REPLY, type Reply } from '../replies.ts';
import type { Reader, TransactionSlot } from '../session.ts';
import { newContentScanner } from './data.ts';

export type BdatPlan = {
  /** The slot that reads the chunk: the transaction, or the remains of a refused message. */
  slot: NonNullable<TransactionSlot>;
  reader: Reader;
  /** Where the octets go; null: read and dropped. */
  scanner: ContentScanner | null;
};

export function checkBdat(cfg: MachineConfig, slot: TransactionSlot, chunkBytes: number, isLast: boolean): BdatPlan {
  const skip = (refusal: Reply, isCounted: boolean): Reader => ({ kind: 'skip-bdat', chunkBytes, isLast, refusal, isCounted });
  // The rest of a message already refused: same answer, not a new error.
  if (slot !== null && slot.kind === 'refused') return { slot, reader: skip(slot.refusal, false), scanner: null };
  if (slot === null) return { slot: { kind: 'refused', refusal: REPLY.needMail, reader: { kind: 'command' } }, reader: skip(REPLY.needMail, true), scanner: null };
  if (slot.recipients.length === 0) return { slot, reader: skip(REPLY.needRcpt, true), scanner: null };
  const scanner = slot.content ?? newContentScanner(cfg, false);
  return { slot, reader: { kind: 'bdat', chunkBytes, isLast }, scanner };
}

/** Points the slot's reader at the chunk; the first accepted chunk starts the content. */
export function applyBdat(plan: BdatPlan): void {
  const slot = plan.slot;
  slot.reader = plan.reader;
  if (slot.kind === 'open' && plan.scanner !== null && slot.content === null) {
    slot.usedBdat = true;
    slot.content = plan.scanner;
  }
}

export type BdatEnd =
  /** A dropped chunk: answer `reply`; `slot` is what the session holds afterwards. */
  | { kind: 'skipped'; reply: Reply; isCounted: boolean; slot: TransactionSlot }
  /** The message grew past the limit: refused; the rest of its chunks get the same answer. */
  | { kind: 'too-big'; scanner: ContentScanner; slot: TransactionSlot }
  | { kind: 'chunk'; reply: Reply }
  /** The LAST chunk of an accepted message: on to the end-of-content checks. */
  | { kind: 'last'; scanner: ContentScanner };

/** What the end of the chunk being read means; the slot's reader is back to commands. */
export function endBdatChunk(slot: NonNullable<TransactionSlot>): BdatEnd {
  const reader = slot.reader;
  slot.reader = { kind: 'command' };
  if (reader.kind === 'skip-bdat') {
    // After the LAST chunk, or after a chunk refused for a missing MAIL, nothing is left.
    const isOver = slot.kind === 'refused' && (reader.isLast || reader.refusal === REPLY.needMail);
    return { kind: 'skipped', reply: reader.refusal, isCounted: reader.isCounted, slot: isOver ? null : slot };
  }
  if (reader.kind !== 'bdat' || slot.kind !== 'open' || slot.content === null) throw new Error(`end of a BDAT chunk while reading ${reader.kind}`);
  const scanner = slot.content;
  if (scanner.defects.tooBig) {
    return { kind: 'too-big', scanner, slot: reader.isLast ? null : { kind: 'refused', refusal: REPLY.messageTooBig, reader: { kind: 'command' } } };
  }
  if (!reader.isLast) return { kind: 'chunk', reply: REPLY.chunkOk(reader.chunkBytes) };
  scanner.finish();
  return { kind: 'last', scanner };
}
