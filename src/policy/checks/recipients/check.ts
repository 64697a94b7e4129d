// Recipient table check: at RCPT, an address of a local domain that is not in the table is
// refused in the session (550 5.1.1), so it is never accepted and bounced later (backscatter).
// Never looks at non-local domains (relay control decides those) and never refuses Postmaster
// (RFC 5321 4.5.1). A BATV tag (prvs=...=user@domain) is looked up as the user's address.

import { readFileSync } from 'node:fs';
import { stripBatvTag } from '../../../delivery/batv.ts';
import { REPLY } from '../../../protocol/replies.ts';
import type { Check } from '../../check.ts';

export type RecipientTable = {
  /** Lower-cased full addresses. */
  addresses: ReadonlySet<string>;
  /** Lower-cased domains accepted whole ("@domain" lines). */
  catchAllDomains: ReadonlySet<string>;
};

/** One address or "@domain" per line; '#' comments and blank lines ignored. */
export function parseRecipientTable(text: string, source: string): RecipientTable {
  const addresses = new Set<string>();
  const catchAllDomains = new Set<string>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    if (/\s/.test(line) || !line.includes('@')) throw new Error(`${source}:${i + 1}: expected an address or @domain, got "${line}"`);
    if (line.startsWith('@')) catchAllDomains.add(line.slice(1).toLowerCase());
    else addresses.add(line.toLowerCase());
  });
  return { addresses, catchAllDomains };
}

export function loadRecipientTable(path: string): RecipientTable {
  return parseRecipientTable(readFileSync(path, 'utf8'), path);
}

export function recipientsCheck(table: RecipientTable, localDomains: ReadonlySet<string>): Check {
  return {
    name: 'recipients',
    stages: ['rcpt'],
    run: (ctx) => {
      const r = ctx.recipient;
      if (r === null || r.mailbox === 'postmaster') return { action: 'continue' };
      const domain = r.mailbox.domain;
      if (r.mailbox.isAddressLiteral || !localDomains.has(domain)) return { action: 'continue' };
      // Local parts are compared case-insensitively, as most mailbox stores do. A BATV-tagged
      // address (a bounce to our signed return path) is the user's: the batv check judges the tag.
      const address = stripBatvTag(`${r.mailbox.localPart.toLowerCase()}@${domain}`);
      if (table.addresses.has(address) || table.catchAllDomains.has(domain)) return { action: 'continue' };
      return { action: 'reject', reply: REPLY.unknownRecipient, check: 'recipients', reason: `not in the recipient table: ${address}` };
    },
  };
}
