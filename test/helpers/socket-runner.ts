// Plays a transcript against a real server over a loopback socket (TLS included), with the
// suite's one SMTP client. @verdict and @now act on the server's stub checks and pipeline clock,
// which the caller built from the same transcript (startTranscriptServer).

import assert from 'node:assert/strict';
import { readMessage, scanSpool } from '../../src/spool/reader.ts';
import { TestClock } from './drive.ts';
import { startTestServer, type TestServer } from './server.ts';
import { SmtpClient } from './smtp-client.ts';
import { matches, TranscriptPolicy, withoutReceived, type Transcript } from './transcript.ts';

const READ_TIMEOUT_MS = 5000;

/** What a socket run can change besides the bytes it sends: the server's stub checks and clock. */
export type SocketRunHooks = { policy?: TranscriptPolicy; clock?: TestClock };

/**
 * A real server for one run of `t`: its pipeline holds the transcript's stub checks (none: no
 * pipeline) on a test clock that @now moves. Pass the hooks to runSocket.
 */
export async function startTranscriptServer(t: Transcript): Promise<{ server: TestServer; hooks: SocketRunHooks }> {
  const clock = new TestClock(Date.now());
  const policy = new TranscriptPolicy(t, clock.now);
  const server = await startTestServer(t.config, policy.pipeline !== null ? { policy: policy.pipeline } : {});
  return { server, hooks: { policy, clock } };
}

export async function runSocket(t: Transcript, port: number, spoolDir: string, hooks: SocketRunHooks = {}): Promise<void> {
  const client = await SmtpClient.connect(port);
  const line = async (): Promise<string | null> => {
    try {
      return await client.line(READ_TIMEOUT_MS);
    } catch {
      return null; // the timeout
    }
  };
  try {
    for (const step of t.steps) {
      switch (step.kind) {
        case 'send':
          client.write(step.data);
          break;
        case 'expect': {
          const got = await line();
          assert.ok(got !== null, `${t.name}:${step.line}: expected "${step.pattern}", got nothing (closed or timeout)`);
          assert.ok(matches(step.pattern, got), `${t.name}:${step.line}: expected "${step.pattern}", got "${got}"`);
          break;
        }
        case 'tls':
          await client.startTls('mx.example.test');
          break;
        case 'closed':
          assert.ok(await client.waitClosed(READ_TIMEOUT_MS), `${t.name}:${step.line}: expected the server to close`);
          break;
        case 'now':
          assert.ok(hooks.clock !== undefined, `${t.name}: @now over a socket needs the server's pipeline clock`);
          hooks.clock.advance(step.advanceMs);
          break;
        case 'verdict':
          assert.ok(hooks.policy !== undefined, `${t.name}: @verdict over a socket needs the server's stub checks`);
          hooks.policy.apply(step);
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
    client.close();
  }
}
