// The recipient table check's part of the configuration: the [recipients] section (its type,
// defaults and keys) and when it asks for the check. Data and validators only: the loader reads
// it without loading the check (check.ts).

import { domainProblem } from '../../../config/values.ts';
import { keyTable, type CheckConfig } from '../../../config/keys.ts';
import { fail, ok, pathString, stringList, type Validator } from '../../../config/validators.ts';

export type RecipientsConfig = {
  /** File of accepted addresses (one per line, "@domain" for a whole domain); '' = no table. */
  table: string;
  /** Accepted addresses written in the configuration itself, same forms; merged with the file. */
  addresses: string[];
};

const DEFAULTS = { recipients: { table: '', addresses: [] } as RecipientsConfig };

/** Recipient addresses or "@domain" entries, as in the recipient table file. */
function recipientList(): Validator<string[]> {
  return stringList({
    what: 'addresses',
    example: '["alice@example.test", "@example.org"]',
    allowed: 'addresses and `"@domain"` entries; `[]` for none',
    element(value, path) {
      if (/[\s\x00-\x1f\x7f]/.test(value) || !value.includes('@') || value.endsWith('@')) {
        return fail(path, value, 'must be an address ("alice@example.test") or "@domain" for a whole domain');
      }
      const domain = value.slice(value.lastIndexOf('@') + 1);
      const problem = domainProblem(domain);
      if (problem !== undefined) return fail(path, value, `domain "${domain}" ${problem}`);
      return ok(value.toLowerCase());
    },
  });
}

const entry = keyTable(DEFAULTS);

export const recipientsConfig = {
  name: 'recipients',
  defaults: DEFAULTS,
  keys: [
    entry('recipients', 'table', 'table', pathString({ allowEmpty: true }),
      'A file of the recipients accepted for the local domains: one address per line, or `@domain` to accept every ' +
      'address of that domain; blank lines and lines starting with `#` are ignored. With a table, mail for any other ' +
      'address of a local domain is refused at RCPT (`550 5.1.1`), in the session, so it is never accepted and bounced ' +
      'later (backscatter), and the refusal counts toward the session\'s error and refusal limits. `Postmaster` is always ' +
      'accepted (RFC 5321 4.5.1). Empty: every address of a local domain is accepted. A relative path is resolved ' +
      'against the working directory; the file is read at start-up.'),
    entry('recipients', 'addresses', 'addresses', recipientList(),
      'Accepted recipients written in the configuration itself, in the same forms as the table file ' +
      '(`"alice@example.test"`, `"@example.org"` for a whole domain), merged with `recipients.table`. With either ' +
      'set, other addresses of the local domains are refused at RCPT (`550 5.1.1`). Lowercased on load.'),
  ],
  isOn: (c) => c.recipients.table !== '' || c.recipients.addresses.length > 0,
  onWhen: 'recipients.table or recipients.addresses is set',
} satisfies CheckConfig<'recipients', typeof DEFAULTS>;
