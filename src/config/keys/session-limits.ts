// The [limits] keys a session's own time and command limits take (the deadlines the session
// machine judges: protocol/deadlines.ts), stress mode's thresholds (server/stress.ts), and the
// [tarpit] keys. Admission's [limits] keys (connection counts and rates) are in admission.ts;
// both tables feed the one [limits] section. Documented in docs/defense.md.

import { int } from '../validators.ts';
import { keyTable, type ConfigKey } from '../keys.ts';
import { defaultConfig } from '../types.ts';

const entry = keyTable(defaultConfig());

export const SESSION_LIMITS_KEYS: readonly ConfigKey[] = [
  entry('limits', 'command_deadline_seconds', 'commandDeadlineSeconds', int(0, 3600),
    'A command line must be complete this long after its first octet arrived, however slowly it trickles in ' +
    '(a slowloris that sends one octet every few seconds keeps resetting `smtp.command_timeout_seconds`, which ' +
    'bounds only the wait between reads). Past it: `421 4.4.2` and close, defense rule `command_deadline`. ' +
    'The wait for a command to begin stays `smtp.command_timeout_seconds`. `0` turns it off.'),
  entry('limits', 'min_data_rate_bytes', 'minDataRateBytes', int(0, 2 ** 30, { bytes: true }),
    'During DATA and BDAT, the client must send at least this many octets in every window of ' +
    '`limits.min_data_rate_window_seconds`, or the session ends with `421 4.4.2` (defense rule `min_data_rate`). ' +
    'The default (1 KiB a minute) is far below any real link. `0` turns it off.'),
  entry('limits', 'min_data_rate_window_seconds', 'minDataRateWindowSeconds', int(5, 3600),
    'The window over which `limits.min_data_rate_bytes` is measured.'),
  entry('limits', 'session_max_seconds', 'sessionMaxSeconds', int(0, 86_400),
    'A session ends with `421 4.4.2` this long after it began, whatever it is doing (defense rule ' +
    '`session_max`); a message in the middle of its data is lost and the client retries. `0` turns it off.'),
  entry('limits', 'max_idle_commands', 'maxIdleCommands', int(0, 1_000_000),
    'Commands that move no mail forward (NOOP, RSET, VRFY, EXPN, HELP) allowed since the last transaction ' +
    'opened; one more ends the session with `421 4.7.0` (defense rule `idle_commands`). Counted only outside a ' +
    'transaction and reset by each MAIL, so an anti-virus proxy\'s keep-alive NOOPs and RSET before each MAIL ' +
    'never reach it. `0` means no cap.'),
  entry('limits', 'stress_on_percent', 'stressOnPercent', int(1, 100),
    'Stress mode begins when open connections reach this share of the connection limit (percent): every ' +
    'timeout drops to `limits.stress_timeout_seconds` (defense rule `stress_on`, gauge `portcullis_stress_mode`).'),
  entry('limits', 'stress_off_percent', 'stressOffPercent', int(0, 100),
    'Stress mode ends when open connections fall below this share of the connection limit (percent; defense ' +
    'rule `stress_off`). Lower than `limits.stress_on_percent`, so the mode does not flap.'),
  entry('limits', 'stress_timeout_seconds', 'stressTimeoutSeconds', int(1, 3600),
    'Under stress mode, `smtp.command_timeout_seconds`, `smtp.data_timeout_seconds` and ' +
    '`limits.command_deadline_seconds` are at most this (as Postfix does under stress).'),

  entry('tarpit', 'free_errors', 'freeErrors', int(0, 1000),
    'Errors (a bad command, an unknown or refused recipient) a session makes without delay. Each further error ' +
    'reply is delayed, from `tarpit.initial_delay_ms` doubling to `tarpit.max_delay_seconds` (defense rule ' +
    '`tarpit`); at `smtp.max_errors` the session ends with `421 4.7.0` (rule `tarpit_disconnect`).'),
  entry('tarpit', 'initial_delay_ms', 'initialDelayMs', int(0, 60_000),
    'The delay of the first delayed error reply; each next one waits twice as long. `0` turns the tarpit off.'),
  entry('tarpit', 'max_delay_seconds', 'maxDelaySeconds', int(1, 300),
    'The longest one error reply is delayed.'),
  entry('tarpit', 'remember_seconds', 'rememberSeconds', int(0, 30 * 86_400),
    'How long the network of a client that reached the tarpit is remembered in the state store (key ' +
    '`v1:verdict:tarpit:connect:<network>`, shown and lifted by `portcullis verdicts list/forget`): its next ' +
    'sessions start with their first error already delayed. `0`: not remembered.'),
];
