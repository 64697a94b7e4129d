// The rspamd check's part of the configuration: the [rspamd] section (the normal worker's URL,
// what a failure means, the timeout, the largest message scanned, the score thresholds, whether
// rspamd's own action decides) and when it asks for the check (a URL is set). Data and
// validators only. rspamd as a milter is a [[milter]] table instead (docs/filters.md "rspamd").

import { keyTable, type CheckConfig } from '../../../config/keys.ts';
import { bool, fail, int, ok, oneOf, score, typeName, type Validator } from '../../../config/validators.ts';

export type RspamdConfig = {
  /** The normal worker's base URL; '' = off. */
  url: string;
  onFailure: 'tempfail' | 'accept';
  timeoutSeconds: number;
  maxMessageBytes: number;
  addHeaderScore: number;
  tempfailScore: number | null;
  rejectScore: number | null;
  useScannerAction: boolean;
};

const DEFAULTS = {
  rspamd: {
    url: '',
    onFailure: 'tempfail',
    timeoutSeconds: 30,
    maxMessageBytes: 2 * 1024 * 1024,
    addHeaderScore: 6,
    tempfailScore: null,
    rejectScore: 15,
    useScannerAction: false,
  } as RspamdConfig,
};

/** An http(s) base URL without credentials, query or fragment (the path is kept: rspamd behind a proxy), or "". */
function rspamdUrl(): Validator<string> {
  return {
    type: 'string',
    allowed: '`"http://host:port"` or `"https://host:port/prefix"` (no user, query or fragment), or `""`: off',
    check(value, path) {
      if (typeof value !== 'string') return fail(path, value, `must be a URL string such as "http://127.0.0.1:11333", not ${typeName(value)}`);
      if (value === '') return ok('');
      let u: URL;
      try {
        u = new URL(value);
      } catch {
        return fail(path, value, 'is not a URL, e.g. "http://127.0.0.1:11333"');
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') return fail(path, value, 'must be an http:// or https:// URL');
      if (u.username !== '' || u.password !== '') return fail(path, value, 'must not hold a user or password');
      if (u.search !== '' || u.hash !== '') return fail(path, value, 'must not hold a query or a fragment');
      return ok(`${u.origin}${u.pathname.replace(/\/+$/, '')}`);
    },
    toToml: (v) => JSON.stringify(v),
  };
}

const entry = keyTable(DEFAULTS);

export const rspamdConfig = {
  name: 'rspamd',
  defaults: DEFAULTS,
  keys: [
    entry('rspamd', 'url', 'url', rspamdUrl(),
      'The URL of rspamd\'s normal worker (its `bind_socket`, port 11333 by default). Every message up to ' +
      '`rspamd.max_message_bytes` is POSTed to `/checkv2` at the end of data, as it will be stored, with the envelope ' +
      'and client as request headers; the score (or rspamd\'s action, with `use_scanner_action`) decides, and accepted ' +
      'mail gets `X-Spam-Status`, `X-Spam-Score` and `X-Spam-Action` fields. `""` (the default): off. See ' +
      'docs/filters.md "rspamd".'),
    entry('rspamd', 'on_failure', 'onFailure', oneOf(['tempfail', 'accept']),
      'When rspamd cannot be reached, times out, or answers garbage or an HTTP error: `"tempfail"` answers `451 4.7.1` ' +
      '(the sender retries), `"accept"` passes the message unscored. Either way a warning names the reason.'),
    entry('rspamd', 'timeout_seconds', 'timeoutSeconds', int(1, 100),
      'How long one scan may take, connecting included.'),
    entry('rspamd', 'max_message_bytes', 'maxMessageBytes', int(1024, 2 ** 30, { bytes: true }),
      'Larger messages are not scanned and pass (logged, counted as `too_large`). A scanned message is held in memory ' +
      'once more while it is sent.'),
    entry('rspamd', 'add_header_score', 'addHeaderScore', score(-1000, 1000, false),
      'At or above this score accepted mail is marked `X-Spam-Flag: YES`, `X-Spam-Status: Yes` (rspamd\'s own "add ' +
      'header" default is 6).'),
    entry('rspamd', 'tempfail_score', 'tempfailScore', score(-1000, 1000, true),
      'At or above this score the message is refused for now, `451 4.7.1` (a soft reject); `"off"`: never.'),
    entry('rspamd', 'reject_score', 'rejectScore', score(-1000, 1000, true),
      'At or above this score the message is refused in the session, `554 5.7.1`; `"off"`: never. rspamd gives GTUBE ' +
      'exactly 15.'),
    entry('rspamd', 'use_scanner_action', 'useScannerAction', bool(),
      'Let rspamd\'s own `action` decide instead of the three scores: `reject` refuses (`554`), `soft reject` and ' +
      '`greylist` refuse for now (`451`), `add header` and `rewrite subject` mark, `no action` passes.'),
  ],
  isOn: (c) => c.rspamd.url !== '',
  onWhen: 'rspamd.url is set',
} satisfies CheckConfig<'rspamd', typeof DEFAULTS>;
