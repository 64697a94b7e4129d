// `portcullis queue ...`: the operator's view of the running server's queue, over its control
// socket (src/server/queue-control.ts). Formats what the server answers; never reads or writes
// queue state itself, so it is safe while the server runs (and needs it running).

import type { QueueEntry, QueueShape } from '../queue/manager.ts';
import { ControlError, sendControl } from '../server/control.ts';

export const QUEUE_USAGE = `usage: portcullis queue list | show ID | flush [ID|DOMAIN] | delete ID | hold ID | release ID | bounce ID | shape`;

const OPS = new Set(['list', 'show', 'flush', 'delete', 'hold', 'release', 'bounce', 'shape']);

function iso(ms: number): string {
  return Number.isFinite(ms) ? new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z') : '-';
}

function replyText(r: QueueEntry['recipients'][number]['lastReply']): string {
  if (r === null) return '';
  return ` (${r.code}${r.enhanced === null ? '' : ` ${r.enhanced}`} ${r.lines.join(' ').slice(0, 200)})`;
}

/** mailq-like: one line per message, then one indented line per recipient with its state. */
export function formatList(entries: readonly QueueEntry[]): string {
  if (entries.length === 0) return 'queue is empty\n';
  let out = '';
  let bytes = 0;
  for (const e of entries) {
    bytes += e.size;
    const flags = [e.isHeld ? 'held' : '', e.quarantine !== undefined ? `quarantine=${e.quarantine}` : ''].filter((f) => f !== '').join(',');
    out += `${e.queueId}${flags === '' ? '' : `!${flags}`} ${e.size} ${iso(e.arrivalMs)} <${e.reversePath}>\n`;
    for (const r of e.recipients) {
      const when = r.status === 'deferred' || r.status === 'pending' ? ` next ${iso(r.nextAttemptMs)}` : '';
      out += `    <${r.address}> ${r.isInFlight ? 'in-flight' : r.status}${when}${replyText(r.lastReply)}\n`;
    }
  }
  out += `-- ${entries.length} message${entries.length === 1 ? '' : 's'}, ${bytes} octets\n`;
  return out;
}

/** qshape-like: destinations by message age (minutes). */
export function formatShape(shape: QueueShape): string {
  const head = ['destination', 'total', ...shape.bucketsMinutes.map((m) => String(m)), `${shape.bucketsMinutes.at(-1)}+`];
  const rows = shape.rows.map((r) => [r.destination, String(r.total), ...r.counts.map(String)]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' ') + '\n';
  return line(head) + rows.map(line).join('');
}

/** Runs one queue command against the server on `spoolDir`; returns the exit status. */
export async function queueCommand(spoolDir: string, args: readonly string[], write: (s: string) => void, fail: (s: string) => void): Promise<number> {
  const [op, ...rest] = args;
  if (op === undefined || !OPS.has(op)) {
    fail(QUEUE_USAGE);
    return 2;
  }
  let result: unknown;
  try {
    result = await sendControl(spoolDir, { op: `queue.${op}`, args: rest });
  } catch (err) {
    if (!(err instanceof ControlError)) throw err;
    fail(err.message === 'not running' ? `no server is running on the spool ${spoolDir} (the queue commands need it running)` : err.message);
    return 1;
  }
  switch (op) {
    case 'list':
      write(formatList(result as QueueEntry[]));
      return 0;
    case 'show':
      write(`${JSON.stringify(result, null, 2)}\n`);
      return 0;
    case 'shape':
      write(formatShape(result as QueueShape));
      return 0;
    case 'flush':
      write(`woken: ${(result as { woken: number }).woken} message(s)\n`);
      return 0;
    default: {
      const r = result as { queueId: string; found: boolean };
      if (!r.found) {
        fail(`no message ${r.queueId} in the queue`);
        return 1;
      }
      write(`${r.queueId}: ${op === 'delete' ? 'deleted' : op === 'hold' ? 'held' : op === 'release' ? 'released' : 'bounced'}\n`);
      return 0;
    }
  }
}
