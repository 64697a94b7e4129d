// Starts a real Portcullis server in this process on a free loopback port, with its own spool
// in a temp dir, for integration tests. Stops only what it started.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { defaultConfig, type Config } from '../../src/config/types.ts';
import type { PolicyPipeline } from '../../src/policy/pipeline.ts';
import type { MessageTransform } from '../../src/server/connection.ts';
import { SmtpServer, type ServerOptions } from '../../src/server/server.ts';
import { loadSecureContext } from '../../src/server/tls.ts';
import { JournalSpool } from '../../src/spool/journal.ts';

export type TestServer = {
  port: number;
  /** Every bound port, in listener order ([[listener]] tables give several). */
  ports: number[];
  dir: string;
  spoolDir: string;
  config: Config;
  /** Sessions the server counts as live right now. */
  connectionCount: () => number;
  /** Octets of the server's body budget reserved right now (smtp.body_memory_budget_bytes). */
  bodyBudgetBytes: () => number;
  /** What the queue manager tells the server when it cannot (or can again) write its state. */
  setQueueStateFailing: (isFailing: boolean) => void;
  stop: () => Promise<void>;
};

let certs: { certFile: string; keyFile: string; dir: string } | null = null;

/** A throwaway self-signed pair for mx.example.test (openssl, once per test process). */
export function testCerts(): { certFile: string; keyFile: string } {
  if (certs !== null) return certs;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-tls-'));
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '30', '-subj', '/CN=mx.example.test', '-addext', 'subjectAltName=DNS:mx.example.test,IP:127.0.0.1'], { stdio: 'ignore' });
  certs = { certFile, keyFile, dir };
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return certs;
}

export async function startTestServer(
  base?: Config,
  opts: { logStream?: NodeJS.WritableStream; logLevel?: string; policy?: PolicyPipeline; transform?: MessageTransform; spoolSpace?: ServerOptions['spoolSpace']; metrics?: ServerOptions['metrics']; tarpit?: boolean; load?: ServerOptions['load']; pregreetMemory?: ServerOptions['pregreetMemory']; sharedRate?: ServerOptions['sharedRate'] } = {},
): Promise<TestServer> {
  const config = structuredClone(base ?? defaultConfig());
  // The tarpit delays every error past the third: only the tests about it want that.
  if (opts.tarpit !== true) config.tarpit.initialDelayMs = 0;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-test-'));
  config.spool.dir = path.join(dir, 'spool');
  config.smtp.listen = [{ host: '127.0.0.1', port: 0 }];
  config.smtp.workers = 1;
  const { certFile, keyFile } = testCerts();
  const secureContext = config.tls.enabled ? await loadSecureContext({ certFile, keyFile, isGenerated: false }, config.tls) : null;
  const spool = await JournalSpool.open({ dir: config.spool.dir, journalMaxMessageBytes: config.spool.journalMaxMessageBytes, segmentMaxBytes: config.spool.segmentMaxBytes, writerId: 'test' });
  const level = opts.logLevel ?? process.env.PORTCULLIS_TEST_LOG ?? 'silent';
  const log = opts.logStream === undefined ? pino({ level }) : pino({ level }, opts.logStream);
  const server = new SmtpServer({ config, spool, log, secureContext, policy: opts.policy ?? null, transform: opts.transform ?? null, ...(opts.spoolSpace !== undefined ? { spoolSpace: opts.spoolSpace } : {}), ...(opts.metrics !== undefined ? { metrics: opts.metrics } : {}), ...(opts.load !== undefined ? { load: opts.load } : {}), ...(opts.pregreetMemory !== undefined ? { pregreetMemory: opts.pregreetMemory } : {}), ...(opts.sharedRate !== undefined ? { sharedRate: opts.sharedRate } : {}) });
  await server.listen();
  const port = server.addresses()[0].port;
  return {
    port,
    ports: server.addresses().map((a) => a.port),
    dir,
    spoolDir: config.spool.dir,
    config,
    connectionCount: () => server.connectionCount,
    bodyBudgetBytes: () => server.bodyBudget.usedBytes,
    setQueueStateFailing: (isFailing: boolean) => server.setQueueStateFailing(isFailing),
    stop: async () => {
      await server.stop();
      await spool.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
