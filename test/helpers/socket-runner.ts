// Plays a transcript against a real server over a loopback socket (TLS included).

import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { matches, withoutReceived, type Transcript } from './transcript.ts';

const READ_TIMEOUT_MS = 5000;

class LineReader {
  #buf = '';
  #waiters: Array<() => void> = [];
  #closed = false;
  attach(s: net.Socket): void {
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      this.#buf += d;
      this.#wake();
    });
    s.on('close', () => {
      this.#closed = true;
      this.#wake();
    });
    s.on('error', () => undefined);
  }
  detach(s: net.Socket): void {
    s.removeAllListeners('data');
    s.removeAllListeners('close');
  }
  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
  get closed(): boolean {
    return this.#closed;
  }
  async line(): Promise<string | null> {
    const deadline = Date.now() + READ_TIMEOUT_MS;
    for (;;) {
      const i = this.#buf.indexOf('\r\n');
      if (i !== -1) {
        const l = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 2);
        return l;
      }
      if (this.#closed || Date.now() > deadline) return null;
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }
  async waitClosed(): Promise<boolean> {
    const deadline = Date.now() + READ_TIMEOUT_MS;
    while (!this.#closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return this.#closed;
  }
}

export async function runSocket(t: Transcript, port: number, spoolDir: string): Promise<void> {
  let socket: net.Socket = net.connect({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const reader = new LineReader();
  reader.attach(socket);
  try {
    for (const step of t.steps) {
      switch (step.kind) {
        case 'send':
          socket.write(step.data);
          break;
        case 'expect': {
          const got = await reader.line();
          assert.ok(got !== null, `${t.name}:${step.line}: expected "${step.pattern}", got nothing (closed or timeout)`);
          assert.ok(matches(step.pattern, got), `${t.name}:${step.line}: expected "${step.pattern}", got "${got}"`);
          break;
        }
        case 'tls': {
          reader.detach(socket);
          const secure = tls.connect({ socket, rejectUnauthorized: false, servername: 'mx.example.test' });
          await new Promise<void>((resolve, reject) => {
            secure.once('secureConnect', resolve);
            secure.once('error', reject);
          });
          socket = secure;
          reader.attach(secure);
          break;
        }
        case 'closed':
          assert.ok(await reader.waitClosed(), `${t.name}:${step.line}: expected the server to close`);
          break;
        case 'spool-count': {
          let n = 0;
          for await (const _ of scanSpool(spoolDir)) n++;
          assert.equal(n, step.count, `${t.name}:${step.line}: stored messages`);
          break;
        }
        case 'stored': {
          let last: string | null = null;
          for await (const e of scanSpool(spoolDir)) last = e.envelope.queueId;
          assert.ok(last !== null, `${t.name}:${step.line}: nothing stored`);
          const m = await readMessage(spoolDir, last);
          assert.equal(withoutReceived(m!.content.toString('latin1')), step.content, `${t.name}:${step.line}: stored content`);
          break;
        }
      }
    }
  } finally {
    socket.destroy();
  }
}
