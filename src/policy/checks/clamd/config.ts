// The clamd check's part of the configuration: the [clamd] section (where clamd listens, what a
// failure means, its timeouts, the stream limit, how long a virus sender's network is remembered)
// and when it asks for the check (an address is set). Data and validators only: the loader reads
// it without loading the check (check.ts).

import { keyTable, type CheckConfig } from '../../../config/keys.ts';
import { optionalEndpoint } from '../../../config/values.ts';
import { int, oneOf } from '../../../config/validators.ts';
import { CLAMD_DEFAULT_STREAM_MAX_BYTES } from '../../../filters/clamd.ts';
import type { Endpoint } from '../../../net/endpoint.ts';

export type ClamdConfig = {
  /** null: no virus scanning. */
  address: Endpoint | null;
  onFailure: 'tempfail' | 'accept';
  connectTimeoutSeconds: number;
  commandTimeoutSeconds: number;
  streamMaxBytes: number;
  rememberSeconds: number;
};

const DEFAULTS = {
  clamd: {
    address: null,
    onFailure: 'tempfail',
    connectTimeoutSeconds: 5,
    commandTimeoutSeconds: 60,
    streamMaxBytes: CLAMD_DEFAULT_STREAM_MAX_BYTES,
    rememberSeconds: 3600,
  } as ClamdConfig,
};

const entry = keyTable(DEFAULTS);

export const clamdConfig = {
  name: 'clamd',
  defaults: DEFAULTS,
  keys: [
    entry('clamd', 'address', 'address', optionalEndpoint({ tcp: '127.0.0.1:3310', unix: '/run/clamav/clamd.ctl' }),
      'Where clamd listens (its `TCPSocket`/`TCPAddr` or `LocalSocket`). Every message is scanned with clamd\'s ' +
      '`INSTREAM` command at the end of data, exactly as it will be stored, and a message with a virus is refused ' +
      'in the session with `554 5.7.1`. `""` (the default): no virus scanning. See docs/filters.md "ClamAV".'),
    entry('clamd', 'on_failure', 'onFailure', oneOf(['tempfail', 'accept']),
      'When clamd cannot be reached, times out, answers garbage or an error, or the message is larger than ' +
      '`clamd.stream_max_bytes`: `"tempfail"` answers `451` (the sender retries; nothing passes unscanned), ' +
      '`"accept"` passes the message unscanned. Either way a warning names the reason.'),
    entry('clamd', 'connect_timeout_seconds', 'connectTimeoutSeconds', int(1, 60),
      'How long connecting to clamd may take.'),
    entry('clamd', 'command_timeout_seconds', 'commandTimeoutSeconds', int(1, 100),
      'How long clamd may take to take each part of the message, and then to answer its verdict.'),
    entry('clamd', 'stream_max_bytes', 'streamMaxBytes', int(1024, 2 ** 32 - 1, { bytes: true }),
      'The largest message sent to clamd: set it to clamd\'s `StreamMaxLength` (whose default, 25 MiB, is this ' +
      'default). A larger message, or one clamd answers "INSTREAM size limit exceeded", gets `clamd.on_failure`: ' +
      'it never passes as clean.'),
    entry('clamd', 'remember_seconds', 'rememberSeconds', int(0, 30 * 86_400),
      'How long a refusal for a virus is kept in verdict memory for the client\'s network (`verdicts.ipv4_prefix` / ' +
      '`ipv6_prefix`) when a state store is configured, so `portcullis verdicts list` shows who sent it; ' +
      '0: not kept. Each message is still judged on its own bytes.'),
  ],
  isOn: (c) => c.clamd.address !== null,
  onWhen: 'clamd.address is set',
} satisfies CheckConfig<'clamd', typeof DEFAULTS>;
