// Prometheus metrics: the counters the server bumps, their exposition (prom-client, on a registry
// of our own, never the global one) and the small HTTP endpoint that serves `GET /metrics`.
// The hot path only adds to plain numbers; prom-client sees them at scrape time. Never puts
// client-controlled text in a label: every label value comes from a fixed set or from our code.

import cluster from 'node:cluster';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { ListenAddress } from '../config/types.ts';
import type { PolicyStage } from '../protocol/session.ts';
import { DEFENSE_RULES, type DefenseMetrics, type DefenseRule } from '../defense/events.ts';

export const METRIC_PREFIX = 'portcullis_';

const STAGES = ['connect', 'helo', 'mail', 'rcpt', 'data', 'content'] as const satisfies readonly PolicyStage[];
/** The verdict actions; anything else (a bug) is counted as "other" rather than dropped. */
const ACTIONS = ['continue', 'accept', 'tempfail', 'reject', 'disconnect', 'other'] as const;
const STAGE_INDEX: Readonly<Record<string, number>> = Object.fromEntries(STAGES.map((s, i) => [s, i]));
const ACTION_INDEX: Readonly<Record<string, number>> = Object.fromEntries(ACTIONS.map((a, i) => [a, i]));
const OTHER_ACTION = ACTIONS.length - 1;
const DEFENSE_INDEX: Readonly<Record<string, number>> = Object.fromEntries(DEFENSE_RULES.map((r, i) => [r, i]));
/** Security: check names come from our code, but the label set stays bounded even if one did not. */
const MAX_CHECK_NAMES = 64;
const MIN_REPLY_CODE = 400;
const MAX_REPLY_CODE = 599;

/** The content scanners (policy/checks/clamd, spamd, rspamd). Label values are ours, from fixed sets. */
export const CONTENT_FILTERS = ['clamd', 'spamd', 'rspamd'] as const;
export type ContentFilter = (typeof CONTENT_FILTERS)[number];
/** What one scan came to: clean (no finding), tagged (headers only), tempfail/reject (refused for what the
 *  scanner found), too_large (over the scanner's stream limit: on_failure), failed (down, slow, garbage: on_failure). */
export const CONTENT_RESULTS = ['clean', 'tagged', 'tempfail', 'reject', 'too_large', 'failed'] as const;
export type ContentResult = (typeof CONTENT_RESULTS)[number];

/** What the content scanners count (BuildContext.metrics); absent (null) means nothing is counted. */
export interface FilterMetrics {
  contentFilterResult(filter: ContentFilter, result: ContentResult): void;
  /** A virus found (the signature name goes to the log, never to a label). */
  virusFound(filter: ContentFilter): void;
}

/** What the SMTP server counts; absent (null) means nothing is counted. */
export interface SessionMetrics {
  sessionOpened(): void;
  sessionClosed(): void;
  /** A message answered 250 after its spool commit; `bytes` as stored. */
  messageAccepted(bytes: number): void;
  /** Every reply sent; only 4xx and 5xx are counted (by code). */
  reply(code: number): void;
  /** Each measurement of the spool's free space, and whether it is below spool.min_free_bytes. */
  spoolSpace?(freeBytes: number, isLow: boolean): void;
  /** Stress mode went on or off (server/stress.ts): portcullis_stress_mode. */
  stressMode?(isOn: boolean): void;
}

/** One process's metrics. The server and the policy pipeline call the methods; the registry is
 *  read at scrape time (here, or by the primary through prom-client's cluster IPC). */
export class Metrics implements SessionMetrics, DefenseMetrics, FilterMetrics {
  readonly registry = new Registry();
  #sessionsOpened = 0;
  #sessionsActive = 0;
  #messagesAccepted = 0;
  #messageBytes = 0;
  #spoolFreeBytes = Number.NaN;
  #isSpoolLow = false;
  /** Index code - 400. */
  readonly #replies = new Float64Array(MAX_REPLY_CODE - MIN_REPLY_CODE + 1);
  /** Per check name: index stage * ACTIONS.length + action. */
  readonly #verdicts = new Map<string, Float64Array>();
  /** Per defense rule, in DEFENSE_RULES order. */
  readonly #defenses = new Float64Array(DEFENSE_RULES.length);
  /** Index filter * CONTENT_RESULTS.length + result. */
  readonly #contentResults = new Float64Array(CONTENT_FILTERS.length * CONTENT_RESULTS.length);
  readonly #viruses = new Float64Array(CONTENT_FILTERS.length);

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    const self = this;
    new Counter({
      name: `${METRIC_PREFIX}policy_verdicts_total`,
      help: 'Policy check verdicts, by check, stage and action (continue, accept, tempfail, reject, disconnect).',
      labelNames: ['check', 'stage', 'action'] as const,
      registers,
      collect() {
        this.reset();
        for (const [check, row] of self.#verdicts) {
          for (let i = 0; i < row.length; i++) {
            const n = row[i]!;
            if (n === 0) continue;
            const stage = STAGES[Math.floor(i / ACTIONS.length)]!;
            this.inc({ check, stage, action: ACTIONS[i % ACTIONS.length]! }, n);
          }
        }
      },
    });
    new Counter({
      name: `${METRIC_PREFIX}sessions_total`,
      help: 'SMTP sessions (connections) accepted.',
      registers,
      collect() {
        this.reset();
        this.inc(self.#sessionsOpened);
      },
    });
    new Gauge({
      name: `${METRIC_PREFIX}stress_mode`,
      help: 'Stress mode (1: on, timeouts shortened; 0: off); summed over the workers that are in it.',
      registers,
      collect() {
        this.set(self.#isStressed);
      },
    });
    new Gauge({
      name: `${METRIC_PREFIX}sessions_active`,
      help: 'SMTP sessions open now.',
      registers,
      collect() {
        this.set(self.#sessionsActive);
      },
    });
    new Counter({
      name: `${METRIC_PREFIX}messages_accepted_total`,
      help: 'Messages accepted (committed to the spool and answered 250).',
      registers,
      collect() {
        this.reset();
        this.inc(self.#messagesAccepted);
      },
    });
    new Counter({
      name: `${METRIC_PREFIX}messages_accepted_bytes_total`,
      help: 'Octets of the accepted messages as stored (Received: header included).',
      registers,
      collect() {
        this.reset();
        this.inc(self.#messageBytes);
      },
    });
    new Counter({
      name: `${METRIC_PREFIX}replies_total`,
      help: 'Negative SMTP replies (4xx and 5xx) sent, by reply code.',
      labelNames: ['code'] as const,
      registers,
      collect() {
        this.reset();
        const counts = self.#replies;
        for (let i = 0; i < counts.length; i++) {
          if (counts[i] !== 0) this.inc({ code: String(MIN_REPLY_CODE + i) }, counts[i]);
        }
      },
    });
    // With workers each measures the same file system: the primary shows the lowest reading
    // and "low" if any worker is low, not their sum.
    new Gauge({
      name: `${METRIC_PREFIX}spool_low`,
      help: '1 while the spool is below spool.min_free_bytes (MAIL answered 452 4.3.1), else 0.',
      registers,
      aggregator: 'max',
      collect() {
        this.set(self.#isSpoolLow ? 1 : 0);
      },
    });
    new Counter({
      name: `${METRIC_PREFIX}defense_events_total`,
      help: 'Connection defenses that fired, by rule (docs/defense.md lists the rules).',
      labelNames: ['rule'] as const,
      registers,
      collect() {
        this.reset();
        for (let i = 0; i < DEFENSE_RULES.length; i++) {
          if (self.#defenses[i] !== 0) this.inc({ rule: DEFENSE_RULES[i]! }, self.#defenses[i]);
        }
      },
    });
    new Counter({
      name: `${METRIC_PREFIX}content_filter_results_total`,
      help: 'Content scans (clamd, spamd, rspamd) by filter and result: clean, tagged, tempfail, reject, too_large, failed.',
      labelNames: ['filter', 'result'] as const,
      registers,
      collect() {
        this.reset();
        const counts = self.#contentResults;
        for (let i = 0; i < counts.length; i++) {
          if (counts[i] !== 0) this.inc({ filter: CONTENT_FILTERS[Math.floor(i / CONTENT_RESULTS.length)]!, result: CONTENT_RESULTS[i % CONTENT_RESULTS.length]! }, counts[i]);
        }
      },
    });
    new Counter({
      name: `${METRIC_PREFIX}virus_found_total`,
      help: 'Messages refused because a virus scanner found a signature, by filter (the signature is in the log line).',
      labelNames: ['filter'] as const,
      registers,
      collect() {
        this.reset();
        for (let i = 0; i < CONTENT_FILTERS.length; i++) {
          if (self.#viruses[i] !== 0) this.inc({ filter: CONTENT_FILTERS[i]! }, self.#viruses[i]);
        }
      },
    });
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });
  }

  /** A decided policy verdict (PipelineHooks.onVerdict). */
  verdict(check: string, stage: PolicyStage, action: string): void {
    let row = this.#verdicts.get(check);
    if (row === undefined) {
      if (this.#verdicts.size >= MAX_CHECK_NAMES) {
        check = 'other';
        row = this.#verdicts.get(check);
      }
      if (row === undefined) {
        row = new Float64Array(STAGES.length * ACTIONS.length);
        this.#verdicts.set(check, row);
      }
    }
    const s = STAGE_INDEX[stage];
    if (s === undefined) return; // not a stage: a type error upstream, nothing to count
    row[s * ACTIONS.length + (ACTION_INDEX[action] ?? OTHER_ACTION)]!++;
  }

  contentFilterResult(filter: ContentFilter, result: ContentResult): void {
    const f = CONTENT_FILTERS.indexOf(filter);
    const r = CONTENT_RESULTS.indexOf(result);
    if (f >= 0 && r >= 0) this.#contentResults[f * CONTENT_RESULTS.length + r]!++;
  }

  virusFound(filter: ContentFilter): void {
    const f = CONTENT_FILTERS.indexOf(filter);
    if (f >= 0) this.#viruses[f]!++;
  }

  defenseFired(rule: DefenseRule): void {
    const i = DEFENSE_INDEX[rule];
    if (i !== undefined) this.#defenses[i]!++;
  }

  sessionOpened(): void {
    this.#sessionsOpened++;
    this.#sessionsActive++;
  }

  spoolSpace(freeBytes: number, isLow: boolean): void {
    // Registered at the first measurement: with spool.min_free_bytes = 0 nothing measures, and a
    // gauge at 0 would read as a full disk.
    if (Number.isNaN(this.#spoolFreeBytes)) {
      const self = this;
      new Gauge({
        name: `${METRIC_PREFIX}spool_free_bytes`,
        help: 'Free space on the spool file system, as last measured (absent with spool.min_free_bytes = 0).',
        registers: [this.registry],
        aggregator: 'min',
        collect() {
          this.set(self.#spoolFreeBytes);
        },
      });
    }
    this.#spoolFreeBytes = freeBytes;
    this.#isSpoolLow = isLow;
  }

  sessionClosed(): void {
    this.#sessionsActive--;
  }

  #isStressed = 0;

  stressMode(isOn: boolean): void {
    this.#isStressed = isOn ? 1 : 0;
  }

  messageAccepted(bytes: number): void {
    this.#messagesAccepted++;
    this.#messageBytes += bytes;
  }

  reply(code: number): void {
    if (code >= MIN_REPLY_CODE && code <= MAX_REPLY_CODE) this.#replies[code - MIN_REPLY_CODE]!++;
  }

  /** This process's metrics as one scrape answer (workers = 1). */
  source(): MetricsSource {
    return { contentType: this.registry.contentType, text: () => this.registry.metrics() };
  }
}

/**
 * In a cluster worker: answer the primary's scrape requests with this registry. prom-client's
 * workers answer only once an AggregatorRegistry has been constructed in them (that installs the
 * IPC listener) and, by default, with the global registry: setRegistries points them at ours.
 * Call it early: a scrape reaching a worker before this waits for prom-client's 5 s timeout.
 */
export function answerClusterScrapes(metrics: Metrics): void {
  AggregatorRegistry.setRegistries(metrics.registry);
  void new AggregatorRegistry();
}

/** The primary's own metrics (workers' deaths); exposed next to the workers' sums. */
export class PrimaryMetrics {
  readonly registry = new Registry();
  readonly #restarts: Counter;

  constructor() {
    this.#restarts = new Counter({
      name: `${METRIC_PREFIX}worker_restarts_total`,
      help: 'Workers that died and were restarted by the primary.',
      registers: [this.registry],
    });
  }

  workerRestarted(): void {
    this.#restarts.inc();
  }
}

/**
 * In the primary: every worker's registry, summed by prom-client (counters and gauges added; the
 * default process metrics by their own aggregators), followed by the primary's own metrics.
 */
export function clusterSource(primary: PrimaryMetrics): MetricsSource {
  if (!cluster.isPrimary) throw new Error('clusterSource() is for the cluster primary');
  const aggregator = new AggregatorRegistry();
  return {
    contentType: aggregator.contentType,
    text: async () => {
      const [workers, own] = await Promise.all([aggregator.clusterMetrics(), primary.registry.metrics()]);
      return workers === '' || workers.endsWith('\n') ? workers + own : `${workers}\n${own}`;
    },
  };
}

export type MetricsSource = { readonly contentType: string; text(): Promise<string> };

export type MetricsHttpServer = {
  address(): AddressInfo;
  close(): Promise<void>;
};

/** Bounds on the metrics endpoint: it is for one scraper, never reads a body, holds nothing long. */
const HEADERS_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
const MAX_HEADER_BYTES = 8 * 1024;
const MAX_CONNECTIONS = 32;

/**
 * Serves `GET /metrics` (404 for other paths, 405 for other methods). Concurrent scrapes share
 * one collection. A failed scrape answers 500 and is logged; it never throws out of the handler.
 */
export async function startMetricsServer(listen: ListenAddress, source: MetricsSource, log: Logger): Promise<MetricsHttpServer> {
  let inFlight: Promise<string> | null = null;
  const collect = (): Promise<string> =>
    (inFlight ??= source.text().finally(() => {
      inFlight = null;
    }));
  const answer = (res: http.ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void => {
    if (res.headersSent || res.destroyed) return;
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(Buffer.byteLength(body)), ...headers });
    res.end(body);
  };
  const server = http.createServer(
    { headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS, maxHeaderSize: MAX_HEADER_BYTES },
    (req, res) => {
      const url = req.url ?? '';
      const q = url.indexOf('?');
      const path = q < 0 ? url : url.slice(0, q);
      if (path !== '/metrics') return answer(res, 404, 'not found\n');
      if (req.method !== 'GET') return answer(res, 405, 'method not allowed\n', { Allow: 'GET' });
      collect().then(
        (text) => answer(res, 200, text, { 'Content-Type': source.contentType }),
        (err: unknown) => {
          log.warn({ err }, 'metrics scrape failed');
          answer(res, 500, 'scrape failed\n');
        },
      );
    },
  );
  server.maxConnections = MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: listen.host, port: listen.port, exclusive: true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'metrics listener error'));
  const bound = server.address() as AddressInfo;
  log.info({ address: bound.address, port: bound.port }, 'metrics listening');
  return {
    address: () => bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
