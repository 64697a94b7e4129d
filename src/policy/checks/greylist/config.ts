// Greylisting's part of the configuration: the [greylist] section (its type, defaults and keys)
// and when it asks for the check. Data and validators only: the loader reads it without loading
// the check (check.ts).

import { keyTable, type CheckConfig } from '../../../config/keys.ts';
import { bool, int, oneOf } from '../../../config/validators.ts';

export type GreylistConfig = { enabled: boolean; delaySeconds: number; stage: 'rcpt' | 'data' };

const DEFAULTS = { greylist: { enabled: false, delaySeconds: 300, stage: 'rcpt' } as GreylistConfig };

const entry = keyTable(DEFAULTS);

export const greylistConfig = {
  name: 'greylist',
  defaults: DEFAULTS,
  keys: [
    entry('greylist', 'enabled', 'enabled', bool(),
      'Temp-fail the first delivery attempt of each (client network, sender, recipient) triplet; a retry from a new ' +
      'connection after the delay is accepted. Off in the embedded default, on in the sample configuration. Needs the ' +
      'state store (`state.store`). See docs/policy.md.'),
    entry('greylist', 'delay_seconds', 'delaySeconds', int(1, 86_400),
      'How long a new triplet must wait before a retry is accepted (postgrey\'s default, 300 s).'),
    entry('greylist', 'stage', 'stage', oneOf(['rcpt', 'data']),
      '`"rcpt"` temp-fails at RCPT (the usual place); `"data"` temp-fails after the end of data, for all the ' +
      'transaction\'s recipients at once.'),
  ],
  isOn: (c) => c.greylist.enabled,
  onWhen: 'greylist.enabled = true',
} satisfies CheckConfig<'greylist', typeof DEFAULTS>;
