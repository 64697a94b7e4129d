// SPF's part of the configuration: the [spf] section (its type, defaults and keys) and when it
// asks for the check. The embedded default actions are written here once; the check takes its
// actions from the builder (index.ts). Data and validators only: the loader reads it without
// loading the check (check.ts).

import { keyTable, type CheckConfig } from '../../../config/keys.ts';
import { bool, oneOf } from '../../../config/validators.ts';

export type SpfAction = 'continue' | 'tempfail' | 'reject';

export type SpfConfig = {
  enabled: boolean;
  header: 'received-spf' | 'authentication-results' | 'none';
  fail: SpfAction;
  softfail: SpfAction;
  neutral: SpfAction;
  none: SpfAction;
  temperror: SpfAction;
  permerror: SpfAction;
};

/** RFC 7208 8.4 (fail: reject) and 8.6 (temperror: 451); the rest are only marked. */
const DEFAULTS = {
  spf: {
    enabled: false,
    header: 'received-spf',
    fail: 'reject',
    softfail: 'continue',
    neutral: 'continue',
    none: 'continue',
    temperror: 'tempfail',
    permerror: 'continue',
  } as SpfConfig,
};

export const SPF_CONFIG_DEFAULTS: Readonly<SpfConfig> = DEFAULTS.spf;

const entry = keyTable(DEFAULTS);

export const spfConfig = {
  name: 'spf',
  defaults: DEFAULTS,
  keys: [
    entry('spf', 'enabled', 'enabled', bool(),
      'Check the sender with SPF (RFC 7208) at MAIL: the MAIL FROM domain, or the HELO name for the null sender ' +
      '`<>`. Evaluated by the mailauth library, with RFC 7208\'s limits of 10 DNS-querying mechanisms and 2 void ' +
      'lookups. Clients in `relay.networks` are not checked.'),
    entry('spf', 'header', 'header', oneOf(['received-spf', 'authentication-results', 'none']),
      'The header field added to accepted mail with the SPF result: `Received-SPF` (RFC 7208 9.1), ' +
      '`Authentication-Results` (RFC 8601), or none.'),
    entry('spf', 'fail', 'fail', oneOf(['continue', 'tempfail', 'reject']),
      'What an SPF `fail` does: `"reject"` answers `550 5.7.23` (RFC 7372), `"tempfail"` `451 4.7.24`, `"continue"` ' +
      'accepts the mail with the result in its header.'),
    entry('spf', 'softfail', 'softfail', oneOf(['continue', 'tempfail', 'reject']),
      'What an SPF `softfail` (`~all`) does.'),
    entry('spf', 'neutral', 'neutral', oneOf(['continue', 'tempfail', 'reject']),
      'What an SPF `neutral` (`?all`) does.'),
    entry('spf', 'none', 'none', oneOf(['continue', 'tempfail', 'reject']),
      'What happens when the domain publishes no SPF record.'),
    entry('spf', 'temperror', 'temperror', oneOf(['continue', 'tempfail', 'reject']),
      'What a temporary DNS failure during the check does (`"tempfail"`: `451 4.7.24`, the client retries later).'),
    entry('spf', 'permerror', 'permerror', oneOf(['continue', 'tempfail', 'reject']),
      'What a broken SPF record (syntax error, more than 10 DNS-querying mechanisms, more than 2 void lookups) does. ' +
      'Many domains publish broken records, hence `"continue"`.'),
  ],
  isOn: (c) => c.spf.enabled,
  onWhen: 'spf.enabled = true',
} satisfies CheckConfig<'spf', typeof DEFAULTS>;
