// One serving process: the spool writer, the state store, the policy pipeline and the SMTP
// server, stopped gracefully on SIGTERM/SIGINT or when its primary (or the process that started
// it) goes. Loaded by the supervisor only in a worker or a single process, never in the primary.

import cluster from 'node:cluster';
import module from 'node:module';
import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import type { Metrics } from '../obs/metrics.ts';
import { buildPipeline } from '../policy/build.ts';
import { JournalSpool } from '../spool/journal.ts';
import type { SpoolWriter } from '../spool/types.ts';
import { LazyStateStore } from '../store/lazy.ts';
import { tarpitMemory } from '../defense/tarpit-memory.ts';
import { openStateStore } from '../store/open.ts';
import { watchParent } from './parent-watch.ts';
import { queuedRecipients, routerFor, type DeliveryService } from './delivery.ts';
import { SmtpServer } from './server.ts';
import { pregreetMemory } from '../defense/pregreet.ts';
import { sharedRate } from '../defense/shared-rate.ts';
import { PoolClient, type AdmissionAnswers } from './admission-share.ts';
import { workerCount } from './supervisor.ts';
import { writerIdFor } from './session-id.ts';
import { ensureTlsFiles, loadSecureContext } from './tls.ts';

const PURGE_INTERVAL_MS = 10 * 60_000;

/** What a worker tells its primary's queue manager, in commit order (cluster IPC keeps it). */
export type WorkerReport =
  | { t: 'committed'; queueId: string; location: string; envelope: import('../spool/types.ts').Envelope }
  | { t: 'sealed'; file: string };
/** How reports travel: every report of one turn of the event loop (the commits of one group
 *  commit) in one IPC message, in order; one message per commit cost the worker a serialise and
 *  a write, and the primary a parse, per message. */
export type WorkerReports = { t: 'reports'; items: WorkerReport[] };
/** What the primary tells its workers. */
export type PrimaryNotice = { t: 'queue-health'; isHealthy: boolean } | { t: 'verdicts-forgotten' } | AdmissionAnswers;

/** Serves SMTP in this process; `metrics` counts it (and, with no primary, serves /metrics).
 *  `delivery`: the queue, when this is the single process (a worker reports to its primary's). */
/** The single process: the queue runs here, and tells the server of its health directly. */
export type LocalQueue = { delivery: DeliveryService; onHealth(listener: (isHealthy: boolean) => void): void; onVerdictsForgotten?(listener: () => void): void };

let pendingReports: WorkerReport[] = [];

function report(r: WorkerReport): void {
  pendingReports.push(r);
  if (pendingReports.length === 1) queueMicrotask(sendReports);
}

function sendReports(): void {
  const items = pendingReports;
  pendingReports = [];
  if (items.length > 0) process.send?.({ t: 'reports', items } satisfies WorkerReports);
}

export async function runWorker(cfg: Config, log: Logger, metrics: Metrics | null, local: LocalQueue | null = null): Promise<void> {
  const delivery = local?.delivery ?? null;
  const tlsFiles = await ensureTlsFiles(cfg, (m) => log.warn(m));
  const secureContext = await loadSecureContext(tlsFiles, cfg.tls);
  const writerId = writerIdFor(cluster.isWorker ? cluster.worker!.id : null, process.pid);
  const spool = await JournalSpool.open({
    dir: cfg.spool.dir,
    journalMaxMessageBytes: cfg.spool.journalMaxMessageBytes,
    segmentMaxBytes: cfg.spool.segmentMaxBytes,
    writerId,
    // Each commit reaches the queue in segment order; a sealed segment is one the queue may scan.
    onCommitted: (committed, envelope) => {
      if (delivery !== null) {
        delivery.committed({ ...committed, envelope });
      } else report({ t: 'committed', ...committed, envelope });
    },
    onSealed: (file) => {
      if (delivery !== null) delivery.sealed(file);
      else report({ t: 'sealed', file });
    },
  });
  // Recipients as queued: BATV tags stripped, aliases expanded (the record is what the queue reads).
  const router = routerFor(cfg);
  const queueing: SpoolWriter = {
    commit: (message, body) => spool.commit(queuedRecipients(message, router), body),
    bodyFile: (name) => spool.bodyFile(name),
    close: () => spool.close(),
  };
  // Workers bind with SO_REUSEPORT (Linux spreads connections by hash): accepting through the
  // primary and passing each socket over IPC cost more CPU than the whole SMTP session.
  // Opened at its first use, not here: a server with no greylisting and no check that remembers
  // refusals across sessions never touches it, and one whose store is on a full disk (or whose
  // Redis is down) still starts and serves what does not need it; the checks that do tempfail.
  const storeKind = cfg.state.store === 'sqlite' ? 'sqlite' : 'redis';
  const store = new LazyStateStore(() => openStateStore(cfg.state.store, { dir: cfg.spool.dir }), {
    onOpen: () => log.info({ store: storeKind }, 'state store opened'),
    onOpenFailed: (err) => log.warn({ store: storeKind, err }, 'state store cannot be opened; checks that need it answer tempfail'),
  });
  // Expired records are purged in small batches (sqlite); Redis expires keys itself.
  const purge = setInterval(() => {
    store.purgeExpired().catch((err: unknown) => log.warn({ err }, 'state store purge failed'));
  }, PURGE_INTERVAL_MS);
  purge.unref();
  const policy = buildPipeline(cfg, log, store, metrics === null ? {} : { onVerdict: (check, stage, action) => metrics.verdict(check, stage, action), filterMetrics: metrics });
  // Admission limits are the node's: past its share, a worker asks the primary (admission-share.ts).
  const pool = cluster.isWorker ? new PoolClient((m) => process.send?.(m)) : null;
  const admissionShare = pool === null ? null : { workers: workerCount(cfg), pool };
  const pregreet = cfg.pregreet.enabled
    ? pregreetMemory(store, { rememberSeconds: cfg.pregreet.rememberSeconds, passTtlSeconds: cfg.pregreet.passTtlSeconds, ipv4Prefix: cfg.verdicts.ipv4Prefix, ipv6Prefix: cfg.verdicts.ipv6Prefix })
    : null;
  const server = new SmtpServer({ config: cfg, spool: queueing, log, isRoutable: (address) => router.isRoutable(address), secureContext, isReusePort: cluster.isWorker, policy, metrics, admissionShare, pregreetMemory: pregreet,
    tarpitMemory: cfg.tarpit.rememberSeconds > 0 && cfg.tarpit.initialDelayMs > 0
      ? tarpitMemory(store, { ttlSeconds: cfg.tarpit.rememberSeconds, ipv4Prefix: cfg.verdicts.ipv4Prefix, ipv6Prefix: cfg.verdicts.ipv6Prefix })
      : null,
    // Only the first connection opens the store, and only when the rate is shared at all.
    sharedRate: cfg.limits.connectionRateShared ? sharedRate(store, cfg.limits.connectionRatePerIp) : null,
  });
  local?.onHealth((isHealthy) => server.setQueueStateFailing(!isHealthy));
  local?.onVerdictsForgotten?.(() => policy?.forgetRecalled());
  process.on('message', (m: PrimaryNotice) => {
    if (m?.t === 'queue-health') server.setQueueStateFailing(!m.isHealthy);
    else if (m?.t === 'verdicts-forgotten') policy?.forgetRecalled();
    else if (m?.t === 'admit-answers') pool?.onAnswers(m);
  });
  await server.listen();
  const metricsListen = cfg.metrics.listen;
  // In a worker the primary serves /metrics; a single process serves its own.
  const metricsHttp =
    metrics !== null && metricsListen !== null && !cluster.isWorker
      ? await (await import('../obs/metrics.ts')).startMetricsServer(metricsListen, metrics.source(), log)
      : null;
  if (cluster.isWorker) process.send?.('listening');
  else log.info({ workers: 1, tls: secureContext !== null }, 'ready');
  // Every module is loaded now: write the compile cache (bin/portcullis.js) without waiting for a
  // clean exit, so the next start is warm even if this process is killed.
  module.flushCompileCache();
  let isStopping = false;
  const stop = async (): Promise<void> => {
    if (isStopping) return;
    isStopping = true;
    // Deliveries in flight finish (or are deferred) while the sessions drain.
    await Promise.all([server.stop(), metricsHttp?.close(), delivery?.stop(cfg.smtp.stopGraceSeconds * 1000)]);
    clearInterval(purge);
    await spool.close();
    await store.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  // A worker stops when its primary goes (the IPC channel closes); a single process watches the
  // process that started it, as the primary does.
  if (cluster.isWorker) process.on('disconnect', () => void stop());
  else {
    watchParent((parentPid) => {
      log.warn({ parentPid }, 'the process that started the server has exited; stopping');
      void stop();
    });
  }
}
