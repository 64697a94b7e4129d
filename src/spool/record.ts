// The spool's envelope record for an accepted message: the spool, not the session machine,
// decides how what was accepted is stored. Pure mapping; the byte format is format.ts.

import type { AcceptedMessage } from '../message/accepted.ts';
import type { Envelope } from './types.ts';

export function envelopeOf(message: AcceptedMessage): Envelope {
  return {
    version: 1,
    queueId: message.queueId,
    sessionId: message.sessionId,
    receivedAt: new Date(message.receivedAtMs).toISOString(),
    client: { ...message.client },
    reversePath: message.reversePath,
    body: message.bodyType,
    smtputf8: message.smtputf8,
    ...(message.ret !== undefined ? { ret: message.ret } : {}),
    ...(message.envid !== undefined ? { envid: message.envid } : {}),
    recipients: message.recipients.map((r) => ({
      address: r.address,
      ...(r.notify !== undefined ? { notify: typeof r.notify === 'string' ? r.notify : [...r.notify] } : {}),
      ...(r.orcpt !== undefined ? { orcpt: { ...r.orcpt } } : {}),
    })),
    ...(message.quarantine !== undefined ? { quarantine: message.quarantine } : {}),
    size: message.size,
  };
}
