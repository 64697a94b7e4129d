// STARTTLS: when it may start, and what the completed handshake does to the session.
// Never keeps anything the client sent before the handshake (RFC 3207 4.2, 5).
// RFC 3207.

import type { MachineConfig } from '../machine-config.ts';
import { REPLY, type Reply } from '../replies.ts';
import { applyReset } from '../reset.ts';
import type { SessionSecurity, TlsState, TransactionSlot } from '../session.ts';

export function checkStartTls(cfg: MachineConfig, session: SessionSecurity, slot: TransactionSlot): { ok: true } | { ok: false; reply: Reply } {
  if (!cfg.isTlsAvailable) return { ok: false, reply: REPLY.notImplemented('STARTTLS') };
  if (session.tls !== null) return { ok: false, reply: REPLY.alreadyTls };
  if (slot !== null && slot.kind === 'open') return { ok: false, reply: REPLY.tlsInTransaction };
  return { ok: true };
}

/** RFC 3207 4.2: forget everything learnt before TLS; the client must EHLO again. */
export function applyTlsReady(session: SessionSecurity, slot: TransactionSlot, tls: TlsState): TransactionSlot {
  return applyReset('tlsReady', session, slot, { tls });
}
