// BATV bounce verification (draft-levine-smtp-batv-01 4.3): at RCPT, a message from the null
// reverse-path (a bounce or an auto-reply, RFC 5321 4.5.5 / RFC 3834) to a recipient of a BATV
// domain must be addressed to a valid, unexpired prvs tag: we sign every reverse-path of those
// domains, so a bounce to an untagged or forged address answers mail we never sent (backscatter).
// Never looks at mail with a real reverse-path (replies to a tagged address are ordinary mail),
// at other domains, at exceptions or at Postmaster (RFC 5321 4.5.1). Never strips the tag: the
// recipient stays as received; delivery strips it (delivery/batv.ts stripBatvTag).

import type { Logger } from 'pino';
import { verifyBatvAddress, type BatvPolicy, type BatvResult } from '../../../delivery/batv.ts';
import { asciiLine } from '../../../message/header-field.ts';
import { REPLY } from '../../../protocol/replies.ts';
import type { Check } from '../../check.ts';
import type { BatvAction } from './config.ts';

export type BatvCheckOptions = {
  policy: BatvPolicy;
  action: BatvAction;
  now: () => number;
  log: Logger;
};

/** The header field `action = "tag"` adds (one per recipient that failed). */
export const BATV_HEADER = 'X-Portcullis-BATV';

function describe(result: Exclude<BatvResult, { kind: 'valid' }>): string {
  switch (result.kind) {
    case 'untagged':
      return 'bounce to an untagged address';
    case 'malformed':
      return 'bounce to a malformed prvs tag';
    case 'unknown-key':
      return `bounce to a tag of unknown key ${result.keyId}`;
    case 'bad-signature':
      return `bounce to a tag with a bad signature (key ${result.keyId})`;
    case 'expired':
      return `bounce to an expired tag (key ${result.keyId})`;
  }
}

export function batvCheck(opts: BatvCheckOptions): Check {
  const { policy } = opts;
  return {
    name: 'batv',
    stages: ['rcpt'],
    // A refusal is about a bounce to this address, never about the address: a later transaction
    // of the session with a real sender to the same recipient must not inherit it.
    key: (ctx) => `${ctx.transaction?.reversePath === null ? '<>' : 'sender'} ${ctx.recipient?.address.toLowerCase() ?? ''}`,
    run: (ctx) => {
      const r = ctx.recipient;
      if (ctx.transaction === null || ctx.transaction.reversePath !== null) return { action: 'continue' };
      if (r === null || r.mailbox === 'postmaster' || r.mailbox.isAddressLiteral) return { action: 'continue' };
      // RFC 5321 4.5.1: postmaster@ a domain of ours takes mail from anyone, bounces included.
      if (!policy.domains.has(r.mailbox.domain) || r.mailbox.localPart.toLowerCase() === 'postmaster') return { action: 'continue' };
      const address = `${r.mailbox.localPart}@${r.mailbox.domain}`;
      const result = verifyBatvAddress(address, policy, opts.now());
      if (result.kind === 'valid' || policy.exceptions.has(result.address.toLowerCase())) return { action: 'continue' };
      const reason = `${describe(result)}: <${asciiLine(address, 300)}>`;
      switch (opts.action) {
        case 'reject':
          return { action: 'reject', reply: REPLY.batvRefused, check: 'batv', reason };
        case 'tag':
          return { action: 'continue', headers: [`${BATV_HEADER}: ${result.kind} rcpt=<${asciiLine(address, 300)}>`] };
        case 'accept':
          opts.log.info({ sid: ctx.session.id, check: 'batv', reason }, 'batv: accepted (batv.action = "accept")');
          return { action: 'continue' };
      }
    },
  };
}
