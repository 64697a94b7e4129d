// The [metrics] and [log] keys: what operators watch.
// One entry per key: its validator, its default (the embedded one) and its documentation.

import { oneOf } from '../validators.ts';
import { optionalListen } from '../values.ts';
import { keyTable, type ConfigKey } from '../keys.ts';
import { defaultConfig } from '../types.ts';

const entry = keyTable(defaultConfig());

export const OPS_KEYS: readonly ConfigKey[] = [
  entry('metrics', 'listen', 'listen', optionalListen(),
    'Serve Prometheus metrics over HTTP at `/metrics` on this address (from the main process, summed over the ' +
    'workers). Keep it on loopback or a management network. `""`: no metrics endpoint.'),

  entry('log', 'level', 'level', oneOf(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']),
    'The least severe log level written; `"silent"` writes nothing.'),
  entry('log', 'format', 'format', oneOf(['auto', 'json', 'pretty']),
    '`"json"` writes one JSON object per line (for files and log shippers); `"pretty"` writes one human line per ' +
    'event with its time, level, session id, queue id and message; `"auto"` is pretty when standard output is a ' +
    'terminal and JSON otherwise.'),
];
