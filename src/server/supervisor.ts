// Runs the server on every core: a primary that forks one worker per core (sharing the listening
// sockets through node:cluster), restarts a crashed worker without touching the others'
// sessions, and stops them all gracefully on SIGTERM/SIGINT. With one worker, serves in-process.
// Never handles SMTP in the primary when there are workers.

import cluster from 'node:cluster';
import module from 'node:module';
import type { Worker } from 'node:cluster';
import { unlinkSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import os from 'node:os';
import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import { createLogger } from '../obs/log.ts';
import type { Metrics, MetricsHttpServer, PrimaryMetrics } from '../obs/metrics.ts';
import type { DeliveryService } from './delivery.ts';
import { queueHandlers } from './queue-control.ts';
import type { PrimaryNotice, WorkerReport, WorkerReports } from './worker.ts';
import { ControlError, controlSocketPath, startControlServer, type ControlHandler } from './control.ts';
import { watchParent } from './parent-watch.ts';
import { writerIdFor } from './session-id.ts';
import { startTmpSweeper } from './tmp-sweeper.ts';
import { AdmissionPoolServer, isAdmissionRequests } from './admission-share.ts';
import { splitLimits } from './admission.ts';
import { ensureTlsFiles } from './tls.ts';

/** A worker that dies sooner than this after its start counts toward the crash-loop backoff. */
const EARLY_DEATH_MS = 5_000;
const MAX_BACKOFF_MS = 30_000;
/** Deaths before a first "listening" after which the primary gives up and exits 1. */
const MAX_STARTUP_FAILURES = 3;

/**
 * V8 flags every worker starts with, before the primary's own (so an operator's flags win).
 * Each is measured in docs/benchmarks.md ("Memory with large messages"):
 * - `--expose-gc`: read-reclaim.ts collects the dead socket read buffers of large uploads
 *   (without it a worker held 60-130 MiB of them at the peak of bench:memory).
 * - `--max-semi-space-size=2` (MiB): V8 grows the young generation to 2 x 16 MiB under a steady
 *   allocation rate although a session's garbage is a few KiB; 2 MiB saves ~25 MiB per worker
 *   under load with no loss of messages per second in an A/B (bench/ab-flags.ts).
 */
export const WORKER_V8_FLAGS: readonly string[] = ['--expose-gc', '--max-semi-space-size=2'];

export function workerCount(cfg: Config): number {
  return cfg.smtp.workers === 'auto' ? Math.max(1, os.availableParallelism()) : cfg.smtp.workers;
}

/** Entry point for `portcullis serve`: primary or worker, decided by node:cluster. */
export async function serve(cfg: Config): Promise<void> {
  const metricsListen = cfg.metrics.listen;
  // prom-client is loaded only when metrics are on: a worker without them stays that much smaller.
  const obs = metricsListen === null ? null : await import('../obs/metrics.ts');
  if (cluster.isWorker) {
    const metrics = obs === null ? null : new obs.Metrics();
    // First thing: a scrape the primary sends before a worker answers waits prom-client's 5 s.
    if (obs !== null && metrics !== null) obs.answerClusterScrapes(metrics);
    return (await import('./worker.ts')).runWorker(cfg, createLogger(cfg.log, { worker: cluster.worker?.id }), metrics);
  }
  const log = createLogger(cfg.log);
  await mkdir(cfg.spool.dir, { recursive: true, mode: 0o700 });
  // First: it is the spool's lock (a second server on the same spool stops here, before it
  // touches anything) and how `portcullis stop` reaches us.
  const control = await startControl(cfg, log);
  // One sweeper per server, here (primary or single process), not one per worker.
  await startTmpSweeper(cfg.spool.dir, log);
  const tlsFiles = await ensureTlsFiles(cfg, (m) => log.warn(m));
  const n = workerCount(cfg);
  // The queue: recovered before any writer starts (every segment on disk is then sealed), and
  // served here, one per spool, whatever the number of workers.
  let healthListener: (isHealthy: boolean) => void = () => undefined;
  let liveWriters: () => string[] = () => [];
  const delivery = await (await import('./delivery.ts')).startDelivery(cfg, log, {
    onHealth: (isHealthy) => healthListener(isHealthy),
    liveWriterIds: () => liveWriters(),
  });
  for (const [op, handler] of queueHandlers(delivery.manager, log)) control.set(op, handler);
  // `portcullis verdicts forget` deleted records from the store: every process drops its cached reads.
  let verdictsForgotten: () => void = () => undefined;
  control.set('verdicts.forgotten', async (args) => {
    log.info({ target: args[0] ?? null }, 'verdicts forgotten by the operator');
    verdictsForgotten();
    return {};
  });
  // The SMTP server, the spool writer, the policy checks and the state store are loaded only where
  // they serve (a worker, or the single process).
  if (n === 1) {
    liveWriters = () => [writerIdFor(null, process.pid)];
    const local = {
      delivery,
      onHealth: (listener: (isHealthy: boolean) => void) => (healthListener = listener),
      onVerdictsForgotten: (listener: () => void) => (verdictsForgotten = listener),
    };
    return (await import('./worker.ts')).runWorker(cfg, log, obs === null ? null : new obs.Metrics(), local);
  }
  // The primary serves /metrics: the workers' registries summed, plus its own.
  let primaryMetrics: PrimaryMetrics | null = null;
  let metricsHttp: MetricsHttpServer | null = null;
  if (obs !== null && metricsListen !== null) {
    primaryMetrics = new obs.PrimaryMetrics();
    metricsHttp = await obs.startMetricsServer(metricsListen, obs.clusterSource(primaryMetrics), log);
  }
  const admissionPool = new AdmissionPoolServer(splitLimits(cfg.limits, n).pool, { ipv4: cfg.verdicts.ipv4Prefix, ipv6: cfg.verdicts.ipv6Prefix });
  const primary = runPrimary(n, log, admissionPool, tlsFiles === null ? 'none' : 'ok', primaryMetrics, metricsHttp, cfg.smtp.stopGraceSeconds * 1000, delivery);
  healthListener = primary.tellHealth;
  verdictsForgotten = primary.tellVerdictsForgotten;
  liveWriters = primary.liveWriterIds;
}

/** A worker past its stop grace closes what is left at once; this is the margin for that. */
const STOP_MARGIN_MS = 5_000;

async function startControl(cfg: Config, log: Logger): Promise<Map<string, ControlHandler>> {
  const handlers = new Map<string, ControlHandler>([
    ['ping', async () => ({ pid: process.pid })],
    [
      'stop',
      async () => {
        log.info('stop requested on the control socket');
        // The same graceful path as a signal, once this answer is out.
        setTimeout(() => process.kill(process.pid, 'SIGTERM'), 50);
        return { pid: process.pid };
      },
    ],
  ]);
  try {
    await startControlServer(cfg.spool.dir, handlers, (err, op) => log.error({ err, op }, 'control request failed'));
  } catch (err) {
    if (err instanceof ControlError) {
      log.fatal(err.message);
      process.exit(1);
    }
    throw err;
  }
  const file = controlSocketPath(cfg.spool.dir);
  process.on('exit', () => {
    try {
      unlinkSync(file);
    } catch {
      // already gone
    }
  });
  return handlers;
}

function runPrimary(
  n: number,
  log: Logger,
  admissionPool: AdmissionPoolServer,
  tlsState: string,
  metrics: PrimaryMetrics | null,
  metricsHttp: MetricsHttpServer | null,
  stopGraceMs: number,
  delivery: DeliveryService,
): { tellHealth: (isHealthy: boolean) => void; tellVerdictsForgotten: () => void; liveWriterIds: () => string[] } {
  let isStopping = false;
  let isQueueHealthy = true;
  let isDeliveryStopped = false;
  let ready = 0;
  /** Workers that died before they ever listened: a broken set-up (port taken, bad spool). */
  let startupFailures = 0;
  const startedAt = new Map<number, number>();
  const listening = new Set<number>();
  const backoffMs = new Map<number, number>(); // per worker slot
  const pendingForks = new Set<NodeJS.Timeout>();
  /** Workers whose process has not exited. Not `cluster.workers`: cluster removes a worker from it
   * on 'exit' only once its IPC channel has closed, else later on 'disconnect', so the last exit
   * can still see itself there and nothing would log the stop or exit. */
  const alive = new Map<number, Worker>();
  const fork = (slot: number): void => {
    if (isStopping) return;
    const w = cluster.fork();
    const writerId = writerIdFor(w.id, w.process.pid!);
    alive.set(w.id, w);
    startedAt.set(w.id, Date.now());
    w.on('message', (m: unknown) => {
      if (isAdmissionRequests(m)) {
        const answer = admissionPool.handle(w.id, m, Date.now());
        if (answer !== null && w.isConnected()) w.send(answer satisfies PrimaryNotice);
        return;
      }
      if (m !== 'listening') return onReport(m as WorkerReport | WorkerReports);
      listening.add(w.id);
      if (!isQueueHealthy) w.send({ t: 'queue-health', isHealthy: false } satisfies PrimaryNotice);
      if (++ready === n) {
        log.info({ workers: n, tls: tlsState }, 'ready');
        // As the workers do: the compile cache (bin/portcullis.js) written once all is loaded.
        module.flushCompileCache();
      }
    });
    w.on('exit', (code, signal) => {
      const lived = Date.now() - (startedAt.get(w.id) ?? 0);
      const didListen = listening.delete(w.id);
      startedAt.delete(w.id);
      alive.delete(w.id);
      admissionPool.workerGone(w.id);
      // Its segments are sealed: what it committed but never reported is found there.
      delivery.writerGone(writerId);
      if (isStopping) {
        if (alive.size === 0) log.info('all workers stopped');
        exitWhenDone();
        return;
      }
      if (!didListen && ++startupFailures >= MAX_STARTUP_FAILURES) {
        log.fatal({ worker: w.id, code, signal }, 'workers keep failing before they listen; giving up');
        stop('startup failure', 1);
        return;
      }
      // A crashed worker loses only its own sessions; the others keep serving.
      const previous = backoffMs.get(slot) ?? 0;
      const delay = lived < EARLY_DEATH_MS ? Math.min(MAX_BACKOFF_MS, Math.max(100, previous * 2)) : 0;
      backoffMs.set(slot, delay);
      log.error({ worker: w.id, code, signal, restartInMs: delay }, 'worker died; restarting');
      metrics?.workerRestarted();
      const t = setTimeout(() => {
        pendingForks.delete(t);
        fork(slot);
      }, delay);
      pendingForks.add(t);
    });
  };
  const onReport = (r: WorkerReport | WorkerReports): void => {
    if (r?.t === 'reports') {
      for (const item of r.items) onReport(item);
    } else if (r?.t === 'committed') {
      delivery.committed({ queueId: r.queueId, location: r.location, envelope: r.envelope });
    } else if (r?.t === 'sealed') delivery.sealed(r.file);
  };
  /** The primary exits once the workers are gone and the queue has drained (bounded by the grace). */
  const exitWhenDone = (): void => {
    if (alive.size === 0 && isDeliveryStopped) process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
  };
  const stop = (why: string, exitCode = 0): void => {
    if (isStopping) return;
    isStopping = true;
    for (const t of pendingForks) clearTimeout(t);
    pendingForks.clear();
    log.info({ reason: why }, 'stopping workers');
    void metricsHttp?.close();
    if (exitCode !== 0) process.exitCode = exitCode;
    void delivery
      .stop(stopGraceMs)
      .catch((err: unknown) => log.error({ err }, 'queue did not stop cleanly'))
      .then(() => {
        isDeliveryStopped = true;
        exitWhenDone();
      });
    for (const w of alive.values()) w.process.kill('SIGTERM');
    setTimeout(() => process.exit(exitCode), stopGraceMs + STOP_MARGIN_MS).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  watchParent((parentPid) => {
    log.warn({ parentPid }, 'the process that started the server has exited; stopping');
    stop('parent exited');
  });
  cluster.setupPrimary({ execArgv: [...WORKER_V8_FLAGS, ...process.execArgv] });
  for (let i = 0; i < n; i++) fork(i);
  return {
    liveWriterIds: () => [...alive.values()].map((w) => writerIdFor(w.id, w.process.pid!)),
    tellHealth: (isHealthy) => {
      isQueueHealthy = isHealthy;
      for (const w of alive.values()) if (w.isConnected()) w.send({ t: 'queue-health', isHealthy } satisfies PrimaryNotice);
    },
    tellVerdictsForgotten: () => {
      for (const w of alive.values()) if (w.isConnected()) w.send({ t: 'verdicts-forgotten' } satisfies PrimaryNotice);
    },
  };
}
