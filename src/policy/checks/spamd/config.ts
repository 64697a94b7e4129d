// The spamd check's part of the configuration: the [spamd] section (where SpamAssassin's spamd
// listens, what a failure means, its timeouts, the largest message scanned, the score
// thresholds) and when it asks for the check (an address is set). Data and validators only.

import { keyTable, type CheckConfig } from '../../../config/keys.ts';
import { optionalEndpoint } from '../../../config/values.ts';
import { int, oneOf, score } from '../../../config/validators.ts';
import type { Endpoint } from '../../../net/endpoint.ts';

export type SpamdConfig = {
  address: Endpoint | null;
  onFailure: 'tempfail' | 'accept';
  connectTimeoutSeconds: number;
  commandTimeoutSeconds: number;
  maxMessageBytes: number;
  addHeaderScore: number;
  tempfailScore: number | null;
  rejectScore: number | null;
};

const DEFAULTS = {
  spamd: {
    address: null,
    onFailure: 'tempfail',
    connectTimeoutSeconds: 5,
    commandTimeoutSeconds: 60,
    maxMessageBytes: 1024 * 1024,
    addHeaderScore: 5,
    tempfailScore: null,
    rejectScore: 15,
  } as SpamdConfig,
};

const entry = keyTable(DEFAULTS);

export const spamdConfig = {
  name: 'spamd',
  defaults: DEFAULTS,
  keys: [
    entry('spamd', 'address', 'address', optionalEndpoint({ tcp: '127.0.0.1:783', unix: '/run/spamd.sock' }),
      'Where SpamAssassin\'s spamd listens. Every message up to `spamd.max_message_bytes` is scored at the end of ' +
      'data (the `SYMBOLS` command of spamd\'s protocol), as it will be stored; the score decides with the thresholds ' +
      'below, and accepted mail gets `X-Spam-Status` and `X-Spam-Score` fields. `""` (the default): off. See ' +
      'docs/filters.md "SpamAssassin".'),
    entry('spamd', 'on_failure', 'onFailure', oneOf(['tempfail', 'accept']),
      'When spamd cannot be reached, times out, or answers garbage or an error: `"tempfail"` answers `451 4.7.1` (the ' +
      'sender retries), `"accept"` passes the message unscored. Either way a warning names the reason.'),
    entry('spamd', 'connect_timeout_seconds', 'connectTimeoutSeconds', int(1, 60),
      'How long connecting to spamd may take.'),
    entry('spamd', 'command_timeout_seconds', 'commandTimeoutSeconds', int(1, 100),
      'How long spamd may take to take each part of the message, and then to answer its score.'),
    entry('spamd', 'max_message_bytes', 'maxMessageBytes', int(1024, 2 ** 30, { bytes: true }),
      'Larger messages are not scored and pass (logged, counted as `too_large`): spam is small, and scoring large ' +
      'mail is slow (spamc\'s own limit is 500 KB).'),
    entry('spamd', 'add_header_score', 'addHeaderScore', score(-1000, 1000, false),
      'At or above this score accepted mail is marked: `X-Spam-Flag: YES` and `X-Spam-Status: Yes` (below: `No`). ' +
      'SpamAssassin\'s own `required_score` is 5.'),
    entry('spamd', 'tempfail_score', 'tempfailScore', score(-1000, 1000, true),
      'At or above this score the message is refused for now, `451 4.7.1` (a soft reject: a real sender retries and ' +
      'may score lower); `"off"`: never.'),
    entry('spamd', 'reject_score', 'rejectScore', score(-1000, 1000, true),
      'At or above this score the message is refused in the session, `554 5.7.1`; `"off"`: never (then mark only).'),
  ],
  isOn: (c) => c.spamd.address !== null,
  onWhen: 'spamd.address is set',
} satisfies CheckConfig<'spamd', typeof DEFAULTS>;
