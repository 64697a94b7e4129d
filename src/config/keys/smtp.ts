// The [smtp] and [tls] keys: what the listener accepts and how long it waits.
// One entry per key: its validator, its default (the embedded one) and its documentation.

import { MAX_MESSAGE_BYTES } from '../../spool/format.ts';
import tls from 'node:tls';
import { bool, fail, int, ok, oneOf, pathString, type Validator } from '../validators.ts';
import { domainName, listenList, workers } from '../values.ts';
import { keyTable, type ConfigKey } from '../keys.ts';
import { defaultConfig } from '../types.ts';

const entry = keyTable(defaultConfig());

/** An OpenSSL cipher string, checked the only way that is exact: by building a TLS context with it. */
function cipherList(): Validator<string> {
  return {
    type: 'string',
    allowed: 'an OpenSSL cipher list; names starting with `TLS_` are TLS 1.3 suites',
    check(value, path) {
      if (typeof value !== 'string' || value.trim() === '') return fail(path, value, 'must be a non-empty OpenSSL cipher list');
      try {
        tls.createSecureContext({ ciphers: value, minVersion: 'TLSv1.2', honorCipherOrder: true });
      } catch (err) {
        return fail(path, value, `OpenSSL does not accept it (${(err as Error).message})`);
      }
      return ok(value);
    },
    toToml: (value) => JSON.stringify(value),
  };
}

const RFC_COMMAND_LINE = 'RFC 5321 4.5.3.1.4';
const RFC_TEXT_LINE = 'RFC 5321 4.5.3.1.6';
const RFC_RECIPIENTS = 'RFC 5321 4.5.3.1.8';
const RFC_COMMAND_TIMEOUT = 'RFC 5321 4.5.3.2.7';
const RFC_DATA_TIMEOUT = 'RFC 5321 4.5.3.2.5';

export const SMTP_KEYS: readonly ConfigKey[] = [
  entry('smtp', 'listen', 'listen', listenList(),
    'Addresses to accept SMTP connections on, each `"host:port"`. The host is an IP address, `localhost` or a host ' +
    'name looked up at start-up; write IPv6 addresses in brackets (`"[::1]:2525"`). `"0.0.0.0:25"` and `"[::]:25"` ' +
    'listen on every address. The same address may not appear twice.'),
  entry('smtp', 'hostname', 'hostname', domainName(),
    'The name this server announces in its greeting, its EHLO reply and the Received header fields it adds ' +
    '(RFC 5321 4.2, 4.4). Use the name the MX record and the reverse DNS of the listening address point at.'),
  entry('smtp', 'max_message_bytes', 'maxMessageBytes', int(2 ** 10, MAX_MESSAGE_BYTES, { bytes: true, maxReason: 'the largest message the spool stores, less room for the header fields the server adds' }),
    'Largest message accepted, in octets. Advertised with the EHLO `SIZE` keyword (RFC 1870) and enforced while the ' +
    'data is read, so a larger message is refused before it is stored.'),
  entry('smtp', 'body_memory_bytes', 'bodyMemoryBytes', int(2 ** 16, 2 ** 26, { bytes: true }),
    'Octets of one message a session holds in memory. Past them (or at once, when the client declared a larger ' +
    '`SIZE`) the body streams to its file in the spool while it arrives, so memory per session stays small ' +
    'whatever the message size; the header section always stays in memory, and a message whose header section ' +
    'is larger than this is refused (`552 5.3.4`). See docs/spool.md.'),
  entry('smtp', 'body_memory_budget_bytes', 'bodyMemoryBudgetBytes', int(2 ** 16, 2 ** 34, { bytes: true }),
    'Octets of message content all the sessions of one process (each worker) hold in memory together, at most; ' +
    'at least `smtp.body_memory_bytes`. `smtp.body_memory_bytes` bounds one session; this bounds their sum, ' +
    'whatever the number of sessions: a message that does not fit streams to its file in the spool early, ' +
    'before its own `smtp.body_memory_bytes`, and what it held goes back to the budget. Small messages fit (the ' +
    'default holds 32 sessions at 1 MiB each at once); only when many large uploads arrive together do more of ' +
    'them go to the disk sooner. See docs/architecture.md (the body handle).'),
  entry('smtp', 'workers', 'workers', workers(),
    '`"auto"` runs one worker process per CPU core; `1` serves from the main process; `N` runs N worker processes.'),
  entry('smtp', 'max_command_line_bytes', 'maxCommandLineBytes', int(512, 2 ** 16, { rfc: RFC_COMMAND_LINE, bytes: true }),
    'Longest command line accepted, in octets including the CRLF. RFC 5321 4.5.3.1.4 sets 512 as the floor; ESMTP ' +
    'parameters (for example DSN\'s `ENVID` or `AUTH=`) can push MAIL and RCPT lines past it, so raise this if ' +
    'clients need them.'),
  entry('smtp', 'max_text_line_bytes', 'maxTextLineBytes', int(1000, 2 ** 20, { rfc: RFC_TEXT_LINE, bytes: true }),
    'Longest line of message data accepted, in octets including the CRLF. RFC 5321 4.5.3.1.6 sets 1000 as the floor.'),
  entry('smtp', 'max_recipients', 'maxRecipients', int(100, 100_000, { rfc: RFC_RECIPIENTS }),
    'Recipients accepted in one transaction. Past it RCPT is answered 452 (RFC 5321 4.5.3.1.10) and the client sends ' +
    'the rest in another transaction. RFC 5321 4.5.3.1.8 requires room for at least 100.'),
  entry('smtp', 'max_errors', 'maxErrors', int(1, 1000),
    'Errors caused by the client tolerated in one session; the next one is answered `421 4.7.0` and the ' +
    'connection closed. Counted: replies to bad syntax, commands out of sequence, refused recipients and other ' +
    'policy refusals, refused message content. Not counted, being no fault of the client: `452` for too many ' +
    'recipients (RFC 5321 4.5.3.1.10 asks the client to send the rest in another transaction), `452 4.3.1` ' +
    'while the spool is low on space, `451` when the spool cannot store a message, and the closing `421`.'),
  entry('smtp', 'max_transactions', 'maxTransactions', int(1, 100_000),
    'Transactions (MAIL commands) allowed in one session; past it the server answers `421 4.7.0` and closes.'),
  entry('smtp', 'allow_empty_helo', 'allowEmptyHelo', bool(),
    'Accept HELO or EHLO without an argument, for broken clients; the client\'s identity then becomes its address. ' +
    'RFC 5321 4.1.1.1 requires the argument, so leave this off unless a known client needs it.'),
  entry('smtp', 'vrfy', 'vrfy', oneOf(['252', 'disabled']),
    '`"252"` answers every VRFY with 252 (cannot verify, will attempt delivery), so it never confirms whether an ' +
    'address exists (RFC 5321 3.5.3, 7.3); `"disabled"` answers 502.'),
  entry('smtp', 'expn', 'expn', oneOf(['252', 'disabled']),
    '`"disabled"` answers EXPN with 502; `"252"` answers it like VRFY. Either way no list is ever expanded ' +
    '(RFC 5321 7.3).'),
  entry('smtp', 'bare_line_endings', 'bareLineEndings', oneOf(['reject', 'normalize']),
    'What happens to a message whose data holds a bare CR, a bare LF or a NUL (the SMTP smuggling class): ' +
    '`"reject"` refuses it; `"normalize"` accepts it with its line endings rewritten. Either way only CRLF.CRLF ' +
    'ends the data (RFC 5321 4.1.1.4).'),
  entry('smtp', 'command_timeout_seconds', 'commandTimeoutSeconds', int(300, 3600, { rfc: RFC_COMMAND_TIMEOUT }),
    'How long the server waits for the next command before closing the connection. RFC 5321 4.5.3.2.7 asks for at ' +
    'least 5 minutes.'),
  entry('smtp', 'data_timeout_seconds', 'dataTimeoutSeconds', int(180, 3600, { rfc: RFC_DATA_TIMEOUT }),
    'How long the server waits between reads while receiving message data. RFC 5321 4.5.3.2.5 gives the client ' +
    '3 minutes per data block, so the server waits at least that long.'),
  entry('smtp', 'stop_grace_seconds', 'stopGraceSeconds', int(1, 3600),
    'On a graceful stop (SIGTERM, SIGINT) the server stops accepting connections and answers every idle session ' +
    '`421 4.3.2` at once; a session in the middle of its data may finish the message (and gets its reply, then ' +
    '`421 4.3.2`) for up to this long, so the client does not have to send it again. Past it every connection left ' +
    'is closed.'),
  entry('smtp', 'proxy_protocol', 'proxyProtocol', bool(),
    'Every connection starts with a PROXY protocol header (v1 or v2, as HAProxy\'s `send-proxy` and ' +
    '`send-proxy-v2` send it) from a load balancer in `proxy.trusted`, and the client is the one it names. ' +
    'Only connections from `proxy.trusted` are served then; turn it on only for a listener behind such a proxy. ' +
    'See docs/operations.md (Behind a load balancer).'),

  entry('tls', 'cert', 'certFile', pathString({ allowEmpty: true }),
    'PEM certificate chain for STARTTLS. Set `tls.cert` and `tls.key` together, or leave both empty to have a ' +
    'self-signed certificate generated under the spool directory\'s parent. A relative path is resolved against ' +
    'the working directory.'),
  entry('tls', 'key', 'keyFile', pathString({ allowEmpty: true }),
    'PEM private key for `tls.cert`. Set both or neither. A relative path is resolved against the working directory.'),
  entry('tls', 'enabled', 'enabled', bool(),
    'Advertise and honour STARTTLS (RFC 3207).'),
  entry('tls', 'ciphers', 'ciphers', cipherList(),
    'The cipher suites offered, in the server\'s order of preference, which the server applies (not the ' +
    'client\'s). The default allows only forward-secret AEAD suites: no CBC, RC4, 3DES or static RSA key ' +
    'exchange. TLS 1.2 and 1.3 only; client-initiated renegotiation is always refused. Checked at start-up by ' +
    'building a TLS context with it, so a typo is an error, not a silent fallback.'),
  entry('tls', 'handshake_timeout_seconds', 'handshakeTimeoutSeconds', int(1, 300),
    'How long a STARTTLS handshake may take, from the `220` reply to the finished handshake; past it the ' +
    'connection is closed. A handshake is a few round trips, well under a second on most links.'),
];
