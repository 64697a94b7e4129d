// The authentication check's part of the configuration: the [dkim], [arc] and [dmarc] sections
// (their types, defaults and keys) and when they ask for the check. Data and validators only: the
// loader reads it without loading the check (check.ts). docs/filters.md "Authentication results".

import { keyTable, type CheckConfig } from '../../../config/keys.ts';
import { bool, oneOf } from '../../../config/validators.ts';

export type DmarcQuarantineAction = 'continue' | 'quarantine' | 'reject';

const DEFAULTS = {
  dkim: { enabled: false },
  arc: { enabled: false },
  dmarc: { enabled: false, enforce: false, quarantineAction: 'continue' as DmarcQuarantineAction },
};

const entry = keyTable(DEFAULTS);

export const authenticationConfig = {
  name: 'authentication',
  defaults: DEFAULTS,
  keys: [
    entry('dkim', 'enabled', 'enabled', bool(),
      'Verify the DKIM signatures (RFC 6376) of every accepted message, on the octets the spool stores, and report ' +
      'one `dkim=` result per signature in the message\'s `Authentication-Results` field (RFC 8601). Verified by the ' +
      'mailauth library in a worker thread; keys shorter than 1024 bits give `dkim=policy`. Clients in ' +
      '`relay.networks` are not checked. A DKIM result never refuses mail by itself.'),
    entry('arc', 'enabled', 'enabled', bool(),
      'Also verify the message\'s ARC chain (RFC 8617) and report `arc=` in `Authentication-Results`. Needs ' +
      '`dkim.enabled` or `dmarc.enabled` (the check runs on either). Informational: an ARC result never changes ' +
      'the DMARC verdict.'),
    entry('dmarc', 'enabled', 'enabled', bool(),
      'Evaluate DMARC (RFC 7489) for the From domain from the SPF and DKIM results and their alignment, and report ' +
      '`dmarc=` in `Authentication-Results`. Verifies DKIM too, even with `dkim.enabled = false`. The SPF result ' +
      'is the SPF check\'s when `spf.enabled`, else it is evaluated for DMARC alone.'),
    entry('dmarc', 'enforce', 'enforce', bool(),
      'Act on the sender\'s published policy: a DMARC `fail` under `p=reject` (or `sp=reject` for a subdomain, ' +
      'applied to `pct` percent of failing messages, the rest treated as `quarantine`) is refused at the end of DATA ' +
      'with `550 5.7.1`; under `p=quarantine`, `dmarc.quarantine_action` applies. `false`: results are only reported.'),
    entry('dmarc', 'quarantine_action', 'quarantineAction', oneOf(['continue', 'quarantine', 'reject']),
      'With `dmarc.enforce = true`, what a DMARC `fail` under `p=quarantine` does: `"continue"` accepts it (the ' +
      '`dmarc=fail` result is in its `Authentication-Results` field for the mailbox\'s filters), `"quarantine"` ' +
      'stores it held for an operator (`portcullis queue`), `"reject"` refuses it like `p=reject`.'),
  ],
  isOn: (c) => c.dkim.enabled || c.dmarc.enabled,
  onWhen: 'dkim.enabled or dmarc.enabled = true',
} satisfies CheckConfig<'authentication', typeof DEFAULTS>;
