// The process logger (pino, JSON lines on stdout). Every session line carries `sid`; at debug
// level one line per command (dir "C") and per reply (dir "S"), so a transcript can be rebuilt
// from the log (see docs/operations.md). Never logs message content.

import { pino, type Logger } from 'pino';
import type { LogConfig } from '../config/types.ts';

export function createLogger(cfg: LogConfig, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level: cfg.level, base: { pid: process.pid, ...bindings } });
}
