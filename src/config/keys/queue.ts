// The [queue] keys: how long the queue keeps trying, when it warns the sender, how hard it
// presses one destination. One entry per key: its validator, its default and its documentation.
// The schedule itself is src/queue/schedule.ts (Postfix's retry habits, RFC 5321 4.5.4.1).

import { duration, int } from '../validators.ts';
import { keyTable, type ConfigKey } from '../keys.ts';
import { defaultConfig } from '../types.ts';

const entry = keyTable(defaultConfig());

export const QUEUE_KEYS: readonly ConfigKey[] = [
  entry('queue', 'max_lifetime', 'maxLifetimeSeconds', duration(3_600, 30 * 86_400),
    'How long a message that cannot be delivered stays in the queue. Past it every recipient still deferred ' +
    'fails, and the sender gets a failure DSN (RFC 5321 4.5.4.1 asks for at least 4-5 days; Postfix ' +
    '`maximal_queue_lifetime` is 5d).'),
  entry('queue', 'delay_warning', 'delayWarningSeconds', duration(0, 30 * 86_400),
    'After this long undelivered, the sender gets one delay DSN for the message (when NOTIFY allows it). ' +
    '`"0s"` sends none. Postfix `delay_warning_time`.'),
  entry('queue', 'min_backoff', 'minBackoffSeconds', duration(1, 86_400),
    'The first retry comes this long after the first failed attempt; later waits double with the message\'s ' +
    'age, up to `queue.max_backoff` (Postfix `minimal_backoff_time`).'),
  entry('queue', 'max_backoff', 'maxBackoffSeconds', duration(1, 86_400),
    'The longest wait between two attempts for one message (Postfix `maximal_backoff_time`, 4000 s). Must be at ' +
    'least `queue.min_backoff`.'),
  entry('queue', 'destination_concurrency', 'destinationConcurrency', int(1, 1000),
    'Deliveries in progress at once to one destination (a domain\'s MX hosts, or one configured next hop). ' +
    'A destination that keeps failing is tried by one delivery at a time until it answers again.'),
];
