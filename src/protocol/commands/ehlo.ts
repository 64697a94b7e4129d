// EHLO / HELO: identity check and the extension list.
// Never validates the HELO name beyond presence (policy may, later); never keeps a transaction.
// RFC 5321 4.1.1.1, 4.1.4 (a new EHLO resets the transaction), RFC 1869 (EHLO keywords).

import { REPLY, type Reply } from '../replies.ts';
import type { MachineConfig } from '../machine-config.ts';
import { applyReset } from '../reset.ts';
import type { HeloIdentity, SessionSecurity, TransactionSlot } from '../session.ts';

export function checkHelo(cfg: MachineConfig, session: SessionSecurity, verb: 'EHLO' | 'HELO', domain: string): { ok: true; heloName: string } | { ok: false; reply: Reply } {
  if (domain === '') {
    if (!cfg.allowEmptyHelo) return { ok: false, reply: REPLY.emptyHelo(verb) };
    // Broken clients exist; their identity becomes their address.
    return { ok: true, heloName: `[${session.peer.address}]` };
  }
  return { ok: true, heloName: domain };
}

/** RFC 5321 4.1.4: an accepted EHLO/HELO resets like RSET and replaces the identity. */
export function applyHelo(cfg: MachineConfig, session: SessionSecurity, slot: TransactionSlot, helo: HeloIdentity): { slot: TransactionSlot; reply: Reply } {
  const next = applyReset('ehlo', session, slot, { helo });
  return { slot: next, reply: helo.verb === 'EHLO' ? ehloReply(cfg, session) : REPLY.helo(cfg.hostname) };
}

/** The EHLO reply: short (old clients parse long multi-line replies badly). */
export function ehloReply(cfg: MachineConfig, session: SessionSecurity): Reply {
  const lines = [cfg.hostname, 'PIPELINING', `SIZE ${cfg.maxMessageBytes}`, '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'CHUNKING', 'DSN'];
  if (cfg.isTlsAvailable && session.tls === null) lines.push('STARTTLS');
  return REPLY.ehlo(lines);
}
