// Turns measured runs into the markdown tables docs/benchmarks.md shows: one table per metric, a
// column per server, and Portcullis's ratio to each peer. Pure: no I/O.

import { type Cell, cellMessages, type RunResult } from './load.ts';
import { DISPLAY_NAMES, SERVER_NAMES, type ServerName } from './servers.ts';

export type CellSummary =
  | { ok: true; messagesPerSecond: number; cpuSecondsPer1000: number; peakPssMiB: number; runs: number }
  | { ok: false; error: string }
  | { ok: false; notRun: true };

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** A cell passes only if every run passed. */
export function summarize(runs: RunResult[]): CellSummary {
  const failed = runs.find((run) => !run.ok);
  if (failed !== undefined && !failed.ok) return { ok: false, error: failed.error };
  const passed = runs.flatMap((run) => (run.ok ? [run] : []));
  if (passed.length === 0) return { ok: false, error: 'no runs' };
  return {
    ok: true,
    messagesPerSecond: median(passed.map((run) => run.messages / run.seconds)),
    cpuSecondsPer1000: median(passed.map((run) => (run.cpuSeconds / run.messages) * 1000)),
    peakPssMiB: Math.max(...passed.map((run) => run.peakPssKiB)) / 1024,
    runs: passed.length,
  };
}

export function cellLabel(cell: Cell): string {
  const size = cell.messageBytes >= 1024 ? `${cell.messageBytes / 1024} KiB` : `${cell.messageBytes} B`;
  const mode = cell.reuseConnection ? 'many msgs/conn (-d)' : '1 msg/conn';
  return `${cell.sessions} sessions, ${size}, ${mode}, ${cellMessages(cell)} msgs`;
}

type Metric = {
  title: string;
  value: (summary: CellSummary & { ok: true }) => number;
  format: (value: number) => string;
};

function metrics(runs: number): Metric[] {
  const of = runs === 1 ? '1 run' : `median of ${runs} runs`;
  return [
    {
      title: `Messages per second (${of}; higher is better)`,
      value: (summary) => summary.messagesPerSecond,
      format: (value) => Math.round(value).toLocaleString('en-US'),
    },
    {
      title: `Server CPU seconds per 1,000 messages (${of}; lower is better)`,
      value: (summary) => summary.cpuSecondsPer1000,
      format: (value) => value.toFixed(2),
    },
    {
      title: 'Peak PSS of the server process tree, MiB (highest sample of all runs; lower is better)',
      value: (summary) => summary.peakPssMiB,
      format: (value) => value.toFixed(0),
    },
  ];
}

function cellText(summary: CellSummary, metric: Metric): string {
  if (summary.ok) return metric.format(metric.value(summary));
  if ('notRun' in summary) return 'not run';
  const reason = summary.error.replaceAll('|', '/').replace(/\s+/g, ' ');
  return `failed: ${reason.length > 60 ? `${reason.slice(0, 57)}...` : reason}`;
}

function ratioText(ours: CellSummary, peer: CellSummary, metric: Metric): string {
  if (!ours.ok || !peer.ok) return '–';
  return (metric.value(ours) / metric.value(peer)).toFixed(2);
}

export function renderTables(cells: Cell[], results: Map<Cell, Record<ServerName, CellSummary>>, runs: number): string {
  const peers = SERVER_NAMES.filter((name) => name !== 'portcullis');
  const header = [
    'load',
    ...SERVER_NAMES.map((name) => DISPLAY_NAMES[name]),
    ...peers.map((peer) => `Portcullis/${DISPLAY_NAMES[peer]}`),
  ];
  const align = ['---', ...header.slice(1).map(() => '--:')];
  const out: string[] = [];
  for (const metric of metrics(runs)) {
    out.push(`#### ${metric.title}`, '', `| ${header.join(' | ')} |`, `| ${align.join(' | ')} |`);
    for (const cell of cells) {
      const row = results.get(cell) as Record<ServerName, CellSummary>;
      out.push(
        `| ${[
          cellLabel(cell),
          ...SERVER_NAMES.map((name) => cellText(row[name], metric)),
          ...peers.map((peer) => ratioText(row.portcullis, row[peer], metric)),
        ].join(' | ')} |`,
      );
    }
    out.push('');
  }
  const failures = cells.flatMap((cell) =>
    SERVER_NAMES.flatMap((name) => {
      const summary = (results.get(cell) as Record<ServerName, CellSummary>)[name];
      return !summary.ok && 'error' in summary ? [`- ${DISPLAY_NAMES[name]}, ${cellLabel(cell)}: ${summary.error}`] : [];
    }),
  );
  if (failures.length > 0) out.push('Failures:', '', ...failures, '');
  return out.join('\n');
}

/** How much other work shared the machine during the measured runs. */
export function noiseNote(otherCores: number[]): string {
  if (otherCores.length === 0) return 'No run completed.';
  const mean = otherCores.reduce((sum, cores) => sum + cores, 0) / otherCores.length;
  const worst = Math.max(...otherCores);
  const note = `Other work on the machine (other processes, hypervisor steal) kept ${mean.toFixed(2)} cores busy on average during the measured runs (worst run: ${worst.toFixed(2)}).`;
  return worst > 0.5 ? `${note} **Warning: the machine was not quiet; these numbers are perturbed.**` : note;
}
