// A log stream for in-process test servers: pino's JSON lines, parsed as they are written, so a
// test can look for the line a server wrote (a defense, a refusal) by its fields.

import { Writable } from 'node:stream';

export type LogLine = Record<string, unknown> & { msg: string };

export function logSink(): { stream: Writable; lines: LogLine[] } {
  const lines: LogLine[] = [];
  let partial = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      partial += chunk.toString('utf8');
      let nl: number;
      while ((nl = partial.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(partial.slice(0, nl)) as LogLine);
        partial = partial.slice(nl + 1);
      }
      done();
    },
  });
  return { stream, lines };
}
