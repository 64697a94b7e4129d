// The [pregreet] keys: the greet pause and early-talker test (docs/defense.md "Pregreet"), run by
// the connection shell between admission and the session (server/connection.ts), its memory in
// the state store (defense/pregreet.ts).

import { bool, int, oneOf } from '../validators.ts';
import { keyTable, type ConfigKey } from '../keys.ts';
import { defaultConfig } from '../types.ts';

const entry = keyTable(defaultConfig());

export const PREGREET_KEYS: readonly ConfigKey[] = [
  entry('pregreet', 'enabled', 'enabled', bool(),
    'Pause before the greeting: send `220-` and the greeting text first, wait `pregreet.wait_seconds`, then the ' +
    'final `220 ` line. A client that sends anything before the final line (an early talker: most spam bots) is ' +
    'refused and its network remembered. Clients in `access.allow` and networks that passed before skip the pause.'),
  entry('pregreet', 'wait_seconds', 'waitSeconds', int(1, 60),
    'How long the pause lasts. RFC 5321 4.5.3.2.1 lets a client wait 5 minutes for the greeting; real MTAs wait.'),
  entry('pregreet', 'action', 'action', oneOf(['reject', 'disconnect'] as const),
    'What an early talker gets: `"reject"`, `554 5.5.1` and close; `"disconnect"`, `421 4.7.0` and close.'),
  entry('pregreet', 'pass_ttl_seconds', 'passTtlSeconds', int(60, 365 * 86_400),
    'How long a network whose client waited is remembered as passed (not paused again), in the state store.'),
  entry('pregreet', 'remember_seconds', 'rememberSeconds', int(0, 365 * 86_400),
    'How long an early talker\'s network is remembered (every connection from it is refused at once with the ' +
    'same reply); `0` remembers nothing. `portcullis verdicts list` shows it (check `pregreet`), `forget` lifts it.'),
];
