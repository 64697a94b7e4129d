// Every wait is bounded: an idle client and a client that stalls in the middle of DATA are
// answered 421 4.4.2 and disconnected. (Timeouts below the RFC minimum are set programmatically
// here; a config file cannot go below 300 s / 180 s.)

import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { defaultConfig } from '../../src/config/types.ts';
import { startTestServer } from '../helpers/server.ts';

async function collectUntilClose(socket: net.Socket, limitMs: number): Promise<string> {
  let text = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => (text += d));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`not closed within ${limitMs} ms; got ${JSON.stringify(text)}`)), limitMs);
    socket.on('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
  return text;
}

for (const [name, script] of [
  ['idle after the greeting', ''],
  ['stalled in the middle of DATA', 'HELO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nDATA\r\npartial line without end'],
  ['stalled in the middle of a command line', 'HELO c.exa'],
  ['stalled inside a BDAT chunk', 'EHLO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nBDAT 100 LAST\r\nonly a few'],
] as const) {
  test(`timeout: ${name} -> 421 4.4.2 and close`, async (t) => {
    const cfg = defaultConfig();
    cfg.domains.local = ['example.test'];
    cfg.smtp.commandTimeoutSeconds = 0.5;
    cfg.smtp.dataTimeoutSeconds = 0.5;
    const server = await startTestServer(cfg);
    t.after(() => server.stop());
    const socket = net.connect({ host: '127.0.0.1', port: server.port });
    if (script !== '') socket.write(script);
    const started = Date.now();
    const text = await collectUntilClose(socket, 5000);
    assert.match(text, /421 4\.4\.2 Timeout, closing connection\r\n$/);
    assert.ok(Date.now() - started >= 400, 'not before the timeout');
  });
}
