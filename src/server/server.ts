// The SMTP server of one process: listeners, the set of live connections, graceful stop.
// Never holds per-session protocol state (connection.ts and the machine do); never exits the
// process (the CLI and the worker supervisor decide that).

import net from 'node:net';
import type tls from 'node:tls';
import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import type { SessionMetrics } from '../obs/metrics.ts';
import { defenseFired, type DefenseMetrics } from '../defense/events.ts';
import type { TarpitMemory } from '../defense/tarpit-memory.ts';
import { StressMode, type LoadSource } from './stress.ts';
import type { SpoolWriter } from '../spool/types.ts';
import type { PolicyPipeline } from '../policy/pipeline.ts';
import { BodyBudget } from '../protocol/body-budget.ts';
import { Connection, type ConnectionDeps, type MessageTransform } from './connection.ts';
import { machineConfigFrom } from './machine-config.ts';
import { isInNetworks, networkList } from '../net/cidr.ts';
import { accessLists, readBlockFile } from '../defense/access.ts';
import { Admission, type AdmissionPool } from './admission.ts';
import type { SharedRate } from '../defense/shared-rate.ts';
import type { PregreetMemory } from '../defense/pregreet.ts';
import { ReadReclaimer } from './read-reclaim.ts';
import { newSessionId } from './session-id.ts';
import { SpoolSpaceMonitor, type FreeSpaceProbe } from './spool-space.ts';

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
  metrics?: (SessionMetrics & Partial<DefenseMetrics>) | null;
  /** The routing table's judgement of a recipient (refused at RCPT when it has no route). */
  isRoutable?: (address: string) => boolean;
  /** Runs on every message between the content checks and the commit (DKIM signing, later). */
  transform?: MessageTransform | null;
  /** The pregreet test's memory (the state store), when pregreet.enabled. */
  pregreetMemory?: PregreetMemory | null;
  /** One of several workers: the node-wide admission remainder is the primary's (admission-share.ts). */
  admissionShare?: { workers: number; pool: AdmissionPool } | null;
  /** How the spool's free space is measured against `spool.min_free_bytes` (default: statfs of
   *  the spool dir every 5 s). */
  spoolSpace?: { probe?: FreeSpaceProbe; intervalMs?: number };
  /** The live connection count and its limit stress mode judges (default: this process's own
   *  connections against limits.max_connections; a node-wide counter can be plugged in). */
  load?: LoadSource;
  /** Defense events are counted here (portcullis_defense_events_total); absent: logged only. */
  defenseMetrics?: DefenseMetrics | null;
  /** The tarpit's memory across sessions; absent: each session starts undelayed. */
  tarpitMemory?: TarpitMemory | null;
  /** The cluster's count of the per-address connection rate (limits.connection_rate_shared); absent: the node's only. */
  sharedRate?: SharedRate | null;
};

/** A spool commit or policy verdict that takes longer fails (451 / 421): every wait is bounded. */
const ACTION_TIMEOUT_MS = 120_000;

export class SmtpServer {
  readonly #opts: ServerOptions;
  readonly #servers: net.Server[] = [];
  readonly #connections = new Set<Connection>();
  readonly #spoolSpace: SpoolSpaceMonitor;
  /** What all sessions of this process hold of message content in memory (smtp.body_memory_budget_bytes). */
  readonly bodyBudget: BodyBudget;
  /** The queue cannot record state (its disk is full): MAIL is refused as on a low spool. */
  #isQueueStateFailing = false;

  constructor(opts: ServerOptions) {
    this.#opts = opts;
    const { config, log } = opts;
    this.bodyBudget = new BodyBudget(config.smtp.bodyMemoryBudgetBytes);
    const minFreeBytes = config.spool.minFreeBytes;
    this.#spoolSpace = new SpoolSpaceMonitor({
      dir: config.spool.dir,
      minFreeBytes,
      ...opts.spoolSpace,
      onChange: (isLow, freeBytes) => {
        if (isLow) log.warn({ freeBytes, minFreeBytes }, 'spool low on space: MAIL is answered 452 4.3.1');
        else log.info({ freeBytes, minFreeBytes }, 'spool space back above its floor: accepting mail again');
        if (!this.#isQueueStateFailing) this.#tellSessions(isLow);
      },
      onMeasure: (freeBytes, isLow) => opts.metrics?.spoolSpace?.(freeBytes, isLow),
      onError: (err) => log.warn({ err }, 'cannot measure the spool\'s free space; keeping the last state'),
    });
  }

  /** Whether MAIL is answered 452 4.3.1: the spool is below its floor, or the queue cannot write. */
  get isRefusingMail(): boolean {
    return this.#spoolSpace.isLow || this.#isQueueStateFailing;
  }

  /** The queue manager could not write its state (a full disk): refuse new mail (452 4.3.1)
   *  until it can again, rather than accept messages it cannot track. */
  setQueueStateFailing(isFailing: boolean): void {
    if (isFailing === this.#isQueueStateFailing) return;
    const wasRefusing = this.isRefusingMail;
    this.#isQueueStateFailing = isFailing;
    this.#opts.log[isFailing ? 'warn' : 'info'](isFailing ? 'queue state cannot be written: MAIL is answered 452 4.3.1' : 'queue state writable again: accepting mail');
    if (this.isRefusingMail !== wasRefusing) this.#tellSessions(this.isRefusingMail);
  }

  /** Every live session learns it at once; new ones at their start (listen()). */
  #tellSessions(isLow: boolean): void {
    for (const c of this.#connections) c.setSpoolLow(isLow);
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
    const trustedProxies = networkList(config.proxy.trusted);
    // One per process: its own share of the limits, the rest counted by the primary (admission.ts).
    const blockFile = config.access.blockFile === '' ? [] : readBlockFile(config.access.blockFile);
    const admission = new Admission({
      access: accessLists(config.access.allow, [...config.access.block, ...blockFile]),
      limits: config.limits,
      prefixes: { ipv4: config.verdicts.ipv4Prefix, ipv6: config.verdicts.ipv6Prefix },
      log,
      metrics: metrics?.defenseFired === undefined ? null : (metrics as DefenseMetrics),
      shared: this.#opts.admissionShare ?? null,
      sharedRate: this.#opts.sharedRate ?? null,
    });
    /** 554-mode sessions held now (limits.max_refused_sessions). */
    let refusedSessions = 0;
    // One per process: dead read buffers are a process-wide pile.
    const reclaimer = new ReadReclaimer();
    // Stress is about load: every open connection counts, allow-listed ones too. A worker judges
    // its own connections against its share of the node's limit (the kernel spreads connections
    // over the workers), so stress engages when the node nears limits.max_connections, not only
    // when one worker alone holds 70 % of it.
    const workers = this.#opts.admissionShare?.workers ?? 1;
    const stressMax = Math.max(1, Math.ceil(config.limits.maxConnections / workers));
    const load = this.#opts.load ?? { connections: () => this.#connections.size, max: () => stressMax };
    const defenseMetrics = this.#opts.defenseMetrics ?? (metrics?.defenseFired === undefined ? null : (metrics as DefenseMetrics));
    const stress = new StressMode({
      load,
      onPercent: config.limits.stressOnPercent,
      offPercent: config.limits.stressOffPercent,
      onChange: (isOn, connections, max) => {
        defenseFired(log, defenseMetrics, {
          rule: isOn ? 'stress_on' : 'stress_off',
          sessionId: null,
          client: null,
          limit: `${isOn ? config.limits.stressOnPercent : config.limits.stressOffPercent}% of ${max}`,
          value: connections,
        });
        metrics?.stressMode?.(isOn);
        for (const c of this.#connections) c.setStress(isOn);
      },
    });
    const deps = {
      machineConfig: machineConfigFrom(config, {
        isTlsAvailable: this.#opts.secureContext !== null,
        policyStages: this.#opts.policy?.stages,
        maxPolicyRefusals: config.verdicts.maxRefusalsPerSession,
        hasTransform: (this.#opts.transform ?? null) !== null,
        logCommands: log.isLevelEnabled('debug'),
        // One per process, like the reclaimer: what every session here holds adds up in one heap.
        bodyBudget: this.bodyBudget,
        ...(this.#opts.isRoutable !== undefined ? { isRoutable: this.#opts.isRoutable } : {}),
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
      tlsHandshakeTimeoutMs: config.tls.handshakeTimeoutSeconds * 1000,
      proxy: null as ConnectionDeps['proxy'],
      actionTimeoutMs: ACTION_TIMEOUT_MS,
      metrics,
      admit: (address: string, nowMs: number) => admission.admit(address, nowMs),
      pregreet: config.pregreet.enabled && (this.#opts.pregreetMemory ?? null) !== null
        ? { memory: this.#opts.pregreetMemory!, waitMs: config.pregreet.waitSeconds * 1000, action: config.pregreet.action, hostname: config.smtp.hostname }
        : null,
      holdRefused: () => {
        if (refusedSessions >= config.limits.maxRefusedSessions) return null;
        refusedSessions++;
        return () => void refusedSessions--;
      },
      defenseMetrics,
      tarpitMemory: this.#opts.tarpitMemory ?? null,
      onRead: (bytes: number) => reclaimer.noteRead(bytes),
      onClose: (c: Connection) => {
        this.#connections.delete(c);
        // Checks holding a per-session resource (a milter connection) let it go.
        this.#opts.policy?.sessionClosed(c.sessionId);
        metrics?.sessionClosed();
        stress.update();
      },
    };
    // Measured before the first session, so none is accepted on a full disk.
    await this.#spoolSpace.start();
    const proxy = { isTrusted: (address: string) => isInNetworks(trustedProxies, address), headerTimeoutMs: config.proxy.headerTimeoutSeconds * 1000 };
    // [[listener]] profiles, or the simple form (smtp.listen, smtp.proxy_protocol) as profiles.
    const listeners = config.listener.length > 0
      ? config.listener
      : config.smtp.listen.map((address) => ({ address, role: 'mx' as const, proxyProtocol: config.smtp.proxyProtocol }));
    for (const listener of listeners) {
      const addr = listener.address;
      const listenerDeps: ConnectionDeps = { ...deps, proxy: listener.proxyProtocol ? proxy : null };
      const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
        const c = new Connection(socket, listenerDeps);
        this.#connections.add(c);
        metrics?.sessionOpened();
        c.start();
        stress.update();
        if (stress.isOn) c.setStress(true);
        if (this.isRefusingMail) c.setSpoolLow(true);
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
      log.info({ address: bound.address, port: bound.port, role: listener.role, proxyProtocol: listener.proxyProtocol }, 'listening');
    }
  }

  /** Stop accepting, tell every session 421 4.3.2 once its current action (or the message it is
   *  sending) is done, wait up to `smtp.stop_grace_seconds`, then drop what is left. */
  async stop(): Promise<void> {
    // close() stops accepting at once; its callback would wait for every connection to end, so
    // the sessions are told first (421 4.3.2 once their current action is done).
    for (const s of this.#servers) s.close();
    this.#spoolSpace.stop();
    for (const c of this.#connections) c.shutdown();
    const deadline = Date.now() + this.#opts.config.smtp.stopGraceSeconds * 1000;
    while (this.#connections.size > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const c of this.#connections) c.abort();
  }
}
