// The HELO/EHLO name check's part of the configuration: the [helo] section (its type, defaults
// and keys) and when it asks for the check. Data and validators only: the loader reads it
// without loading the check (check.ts).

import { keyTable, type CheckConfig } from '../../../config/keys.ts';
import { bool } from '../../../config/validators.ts';

export type HeloConfig = {
  /** Refuse a HELO/EHLO name that is not a fully-qualified domain name (or an address literal). */
  requireFqdn: boolean;
  /** Refuse a HELO/EHLO name that has no A, AAAA or MX record. */
  requireResolvable: boolean;
  /** Refuse a client that announces our own host name or a local domain. */
  rejectOurName: boolean;
};

const DEFAULTS = { helo: { requireFqdn: false, requireResolvable: false, rejectOurName: false } as HeloConfig };

const entry = keyTable(DEFAULTS);

export const heloConfig = {
  name: 'helo',
  defaults: DEFAULTS,
  keys: [
    entry('helo', 'require_fqdn', 'requireFqdn', bool(),
      'Refuse (`550 5.7.1`) a HELO/EHLO name that is not a fully-qualified domain name (a bare word like ' +
      '`localhost` or `PC-1234`) or an address literal. Off by default: broken clients and proxies exist.'),
    entry('helo', 'require_resolvable', 'requireResolvable', bool(),
      'Refuse (`550 5.7.1`) a HELO/EHLO domain name that has no A, AAAA or MX record (a DNS failure answers ' +
      '`450 4.7.1`). Address literals are not looked up.'),
    entry('helo', 'reject_our_name', 'rejectOurName', bool(),
      'Refuse (`550 5.7.1`) a client that announces our own `smtp.hostname`, a local domain, or our own address ' +
      'as a literal: a forgery no honest client makes.'),
  ],
  isOn: (c) => c.helo.requireFqdn || c.helo.requireResolvable || c.helo.rejectOurName,
  onWhen: 'a helo option is on',
} satisfies CheckConfig<'helo', typeof DEFAULTS>;
