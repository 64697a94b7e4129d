// The SMTP server of one process: listeners, the set of live connections, graceful stop.
// Never holds per-session protocol state (connection.ts and the machine do); never exits the
// process (the CLI and the worker supervisor decide that).

import net from 'node:net';
import type tls from 'node:tls';
import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import type { SessionMetrics } from '../obs/metrics.ts';
import type { SpoolWriter } from '../spool/types.ts';
import type { PolicyPipeline } from '../policy/pipeline.ts';
import { Connection, type MessageTransform } from './connection.ts';
import { machineConfigFrom } from './machine-config.ts';
import { isInNetworks, networkList } from './networks.ts';
import { newSessionId } from './session-id.ts';

export type ServerOptions = {
  config: Config;
  spool: SpoolWriter;
  log: Logger;
  secureContext: tls.SecureContext | null;
  /** The policy checks; with none, the machine applies every command without a round trip. */
  policy?: PolicyPipeline | null;
  /** Each cluster worker binds its own listening socket with SO_REUSEPORT, so the kernel spreads
   *  connections over the workers and no accepted socket has to pass through the primary. */
  isReusePort?: boolean;
  /** Sessions, accepted messages and negative replies are counted here; absent: not counted. */
  metrics?: SessionMetrics | null;
  /** Runs on every message between the content checks and the commit (DKIM signing, later). */
  transform?: MessageTransform | null;
};

/** How long a graceful stop waits for sessions to finish their current action. */
const STOP_GRACE_MS = 10_000;
/** A spool commit or policy verdict that takes longer fails (451 / 421): every wait is bounded. */
const ACTION_TIMEOUT_MS = 120_000;

export class SmtpServer {
  readonly #opts: ServerOptions;
  readonly #servers: net.Server[] = [];
  readonly #connections = new Set<Connection>();

  constructor(opts: ServerOptions) {
    this.#opts = opts;
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  /** The addresses actually bound (port 0 in the config picks a free port: tests use that). */
  addresses(): net.AddressInfo[] {
    return this.#servers.map((s) => s.address() as net.AddressInfo);
  }

  async listen(): Promise<void> {
    const { config, log } = this.#opts;
    const metrics = this.#opts.metrics ?? null;
    const relay = networkList(config.relay.networks);
    const deps = {
      machineConfig: machineConfigFrom(config, {
        isTlsAvailable: this.#opts.secureContext !== null,
        policyStages: this.#opts.policy?.stages,
        maxPolicyRefusals: config.verdicts.maxRefusalsPerSession,
        hasTransform: (this.#opts.transform ?? null) !== null,
      }),
      spool: this.#opts.spool,
      log,
      secureContext: this.#opts.secureContext,
      isRelayClient: (address: string) => isInNetworks(relay, address),
      newSessionId,
      policy: this.#opts.policy?.run ?? null,
      transform: this.#opts.transform ?? null,
      commandTimeoutMs: config.smtp.commandTimeoutSeconds * 1000,
      dataTimeoutMs: config.smtp.dataTimeoutSeconds * 1000,
      actionTimeoutMs: ACTION_TIMEOUT_MS,
      metrics,
      onClose: (c: Connection) => {
        this.#connections.delete(c);
        metrics?.sessionClosed();
      },
    };
    for (const addr of config.smtp.listen) {
      const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
        const c = new Connection(socket, deps);
        this.#connections.add(c);
        metrics?.sessionOpened();
        c.start();
      });
      server.on('error', (err) => log.error({ err }, 'listener error'));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        const isReusePort = this.#opts.isReusePort ?? false;
        server.listen({ host: addr.host, port: addr.port, exclusive: isReusePort, reusePort: isReusePort, backlog: 511 }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      this.#servers.push(server);
      const bound = server.address() as net.AddressInfo;
      log.info({ address: bound.address, port: bound.port }, 'listening');
    }
  }

  /** Stop accepting, tell every session 421 4.3.2 once its current action is done, wait. */
  async stop(): Promise<void> {
    // close() stops accepting at once; its callback would wait for every connection to end, so
    // the sessions are told first (421 4.3.2 once their current action is done).
    for (const s of this.#servers) s.close();
    for (const c of this.#connections) c.shutdown();
    const deadline = Date.now() + STOP_GRACE_MS;
    while (this.#connections.size > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const c of this.#connections) c.abort();
  }
}
