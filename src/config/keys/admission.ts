// The [access] keys and the admission keys of [limits]: who is never limited, who is refused at
// connect, and how many connections (per client address, per client network, in total, per minute)
// are admitted (server/admission.ts). Other [limits] keys (deadlines, session caps) live in their
// own table file; one [limits] section holds both. docs/defense.md explains what each one does.

import { parseRate, rateText, type Rate } from '../../defense/rate.ts';
import { bool, fail, int, ok, pathString, type Validator } from '../validators.ts';
import { networkList } from '../values.ts';
import { keyTable, type ConfigKey } from '../keys.ts';
import { defaultConfig } from '../types.ts';

const entry = keyTable(defaultConfig());

function rate(): Validator<Rate> {
  return {
    type: 'string',
    allowed: '`"COUNT/UNIT"`: a count from 1, per `s`, `min` or `hour`, or per a number of them (`"10/30s"`); the window at most a day',
    check(value, path) {
      if (typeof value !== 'string') return fail(path, value, 'must be a string such as "60/min"');
      const parsed = parseRate(value);
      return typeof parsed === 'string' ? fail(path, value, parsed) : ok(parsed);
    },
    toToml: (value) => JSON.stringify(rateText(value)),
  };
}

export const ADMISSION_KEYS: readonly ConfigKey[] = [
  entry('access', 'allow', 'allow', networkList(),
    'Client networks that are never limited: no admission limit (`limits.max_connections*`, ' +
    '`limits.connection_rate_per_ip`) and no block list applies to them. Put your own relays, monitoring ' +
    'and internal hosts here. Behind a load balancer (`smtp.proxy_protocol`) the client is the one the PROXY ' +
    'header names. See docs/defense.md (Access lists).'),
  entry('access', 'block', 'block', networkList(),
    'Client networks refused at connect: they get `554 5.7.1` in place of the greeting and the connection is ' +
    'closed (docs/defense.md, 554 mode). `access.allow` wins over it.'),
  entry('access', 'block_file', 'blockFile', pathString({ allowEmpty: true }),
    'A file of more blocked networks, one CIDR (or one address) per line, `#` starts a comment; `""` for none. ' +
    'Read when the server starts: a line that is not a network stops the start with its line number.'),
  entry('limits', 'max_connections', 'maxConnections', int(1, 1_000_000),
    'Client connections the server holds at once (all workers together); past it a new one gets ' +
    '`421 4.7.0` and is closed. Allow-listed clients do not count and are never refused.'),
  entry('limits', 'max_connections_per_ip', 'maxConnectionsPerIp', int(1, 1_000_000),
    'Connections one client address holds at once (all workers together); past it, `421 4.7.0` and close.'),
  entry('limits', 'max_connections_per_network', 'maxConnectionsPerNetwork', int(1, 1_000_000),
    'Connections one client network holds at once (all workers together); the network is the one verdict ' +
    'memory uses (`verdicts.ipv4_prefix`, `verdicts.ipv6_prefix`: /24 and /64 by default). Past it, ' +
    '`421 4.7.0` and close.'),
  entry('limits', 'connection_rate_per_ip', 'connectionRatePerIp', rate(),
    'New connections one client address may open in a sliding window (all workers together), e.g. `"60/min"`; ' +
    'past it, `421 4.7.0` and close. Refused attempts count too, so a client that keeps hammering stays out ' +
    'until it slows down.'),
  entry('limits', 'connection_rate_shared', 'connectionRateShared', bool(),
    'Counts `limits.connection_rate_per_ip` across the cluster as well: every node sharing the Redis state store ' +
    '(`state.store`) counts the connections it admits there, so a client spreading its connections over the nodes ' +
    'behind a load balancer gets the rate once, not once per node. Needs `state.store` to be a Redis URL. If Redis ' +
    'fails or does not answer within 500 ms the connection is admitted on the node\'s own count, and so is every ' +
    'connection of the next 5 s without asking (one `warn` line a minute at most). See docs/defense.md (Admission).'),
  entry('limits', 'refused_session_seconds', 'refusedSessionSeconds', int(1, 300),
    '554 mode: how long a client refused at connect (`access.block`, or a connect-stage verdict) is kept after its ' +
    '`554` before it is closed (`421 4.7.0`), whether or not it sent QUIT. RFC 5321 3.1 asks the server to wait for ' +
    'QUIT; this bounds the wait, so a client that never sends it holds nothing for long.'),
  entry('limits', 'refused_session_commands', 'refusedSessionCommands', int(1, 100),
    '554 mode: the commands other than QUIT (each answered `503`) after which a client refused at connect is closed ' +
    '(the last one is answered `421 4.7.0`).'),
  entry('limits', 'max_refused_sessions', 'maxRefusedSessions', int(0, 1_000_000),
    '554-mode sessions of blocked clients one server process (each worker) keeps open at once; past it a blocked ' +
    'client is closed right after its `554`, so refused clients cannot crowd out real ones. `0` closes every ' +
    'blocked client right after its `554`.'),
];
