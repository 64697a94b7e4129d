// The process logger (pino). JSON lines on stdout by default (files, log shippers); with
// `log.format = "pretty"`, or "auto" on a terminal, one human line per event: time, level,
// session id, queue id, message, then the other fields as JSON on the same line (pino-pretty,
// loaded only then). Every session line carries `sid`; at debug level one line per command
// (dir "C") and per reply (dir "S"), so a transcript can be rebuilt from the JSON log (see
// docs/operations.md). Never logs message content.

import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';
import type { PrettyOptions } from 'pino-pretty';
import type { LogConfig } from '../config/types.ts';

export type LogOutput = {
  /** Where lines go; default: standard output. */
  stream?: NodeJS.WritableStream;
  /** Whether that output is a terminal (decides "auto"); default: process.stdout.isTTY. */
  isTty?: boolean;
};

/** "auto" is pretty on a terminal and JSON everywhere else (a file, a pipe, a journal). */
export function resolveLogFormat(format: LogConfig['format'], isTty: boolean): 'json' | 'pretty' {
  if (format === 'auto') return isTty ? 'pretty' : 'json';
  return format;
}

export function createLogger(cfg: LogConfig, bindings: Record<string, unknown> = {}, output: LogOutput = {}): Logger {
  const options = { level: cfg.level, base: { pid: process.pid, ...bindings } };
  const isTty = output.isTty ?? process.stdout.isTTY === true;
  if (resolveLogFormat(cfg.format, isTty) === 'pretty') {
    // pino tells pino-pretty its errorKey, which pino-pretty then always prints as an indented
    // multi-line block. Our code logs errors as `{ err }` (serialized as usual), never as the
    // first argument, so pointing errorKey elsewhere keeps every `err` on its event's line.
    return pino({ ...options, errorKey: 'error' }, prettyStream(output.stream, isTty));
  }
  return output.stream === undefined ? pino(options) : pino(options, output.stream as DestinationStream);
}

/** The fields the prefix shows; the rest follow as one JSON object. */
const PREFIX_FIELDS = ['sid', 'queueId'] as const;

function prettyStream(stream: NodeJS.WritableStream | undefined, isTty: boolean): DestinationStream {
  // Loaded here only: a JSON-logging server (every production one) never carries pino-pretty.
  const require = createRequire(import.meta.url);
  const pretty = require('pino-pretty') as (opts: PrettyOptions) => DestinationStream;
  return pretty({
    // One line per event, whatever the fields: several worker processes share the terminal, and
    // each line goes out in one synchronous write, so lines never interleave mid-way. Errors too
    // stay on their line (their stack JSON-escaped) instead of pino-pretty's indented block.
    singleLine: true,
    errorLikeObjectKeys: [],
    sync: true,
    // Security: client text (HELO names, command lines) is only ever in the JSON part, where
    // control characters are escaped; nothing a client sends reaches the terminal raw.
    colorize: isTty,
    translateTime: "UTC:yyyy-mm-dd'T'HH:MM:ss.l'Z'",
    ignore: ['pid', 'hostname', ...PREFIX_FIELDS].join(','),
    messageFormat: (log, messageKey) =>
      [...PREFIX_FIELDS.map((k) => log[k]), log[messageKey]].filter((v): v is string => typeof v === 'string' && v !== '').join(' '),
    ...(stream === undefined ? {} : { destination: stream }),
  });
}
