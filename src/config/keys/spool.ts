// The [spool] and [state] keys: where accepted mail and shared policy state are kept.
// One entry per key: its validator, its default (the embedded one) and its documentation.

import { MAX_SEGMENT_BYTES } from '../../spool/format.ts';
import { int, pathString } from '../validators.ts';
import { stateStore } from '../values.ts';
import { keyTable, type ConfigKey } from '../keys.ts';
import { defaultConfig } from '../types.ts';

const entry = keyTable(defaultConfig());

export const SPOOL_KEYS: readonly ConfigKey[] = [
  entry('spool', 'dir', 'dir', pathString({ allowEmpty: false }),
    'Directory holding accepted messages until they are delivered. A relative path is resolved against the ' +
    'working directory.'),
  entry('spool', 'journal_max_message_bytes', 'journalMaxMessageBytes', int(0, 2 ** 26, { bytes: true }),
    'Messages up to this size are appended to the shared journal segment, so one fsync commits many of them; ' +
    'larger ones get a file of their own. `0` gives every message its own file. Must not exceed ' +
    '`spool.segment_max_bytes`.'),
  entry('spool', 'segment_max_bytes', 'segmentMaxBytes', int(2 ** 20, MAX_SEGMENT_BYTES, { bytes: true, maxReason: 'the largest segment the spool reader reads back' }),
    'A journal segment is closed, and a new one started, once it grows past this size.'),
  entry('spool', 'min_free_bytes', 'minFreeBytes', int(0, 2 ** 50, { bytes: true }),
    'While the spool\'s file system has less free space than this, MAIL is answered `452 4.3.1` (RFC 3463: ' +
    'insufficient system storage), so no client uploads a body that could not be stored; mail is accepted again ' +
    'once space returns. Checked every few seconds. `0` turns the check off.'),

  entry('state', 'store', 'store', stateStore(),
    'Where policy state shared across sessions lives (verdicts remembered by client network with their TTL). ' +
    '`"sqlite"` keeps it in `state.sqlite` in the spool directory (WAL mode, shared by the worker processes of one ' +
    'machine); a Redis URL shares it between several Portcullis nodes behind a load balancer.'),
];
