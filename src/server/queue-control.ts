// The queue's operations on the control socket (`portcullis queue ...`): list, show, flush,
// delete, hold, release, bounce, shape. Each changing action is logged with its queue id. Answers
// are plain JSON data; the CLI formats them (src/cli/queue.ts). Never changes queue state except
// through the manager, so a command is as safe while the server runs as a delivery is.

import type { Logger } from 'pino';
import type { QueueManager } from '../queue/manager.ts';
import { ControlError, type ControlHandler } from './control.ts';

function oneId(op: string, args: readonly string[]): string {
  if (args.length !== 1 || args[0] === '') throw new ControlError(`queue ${op} takes one queue id`);
  return args[0];
}

export function queueHandlers(current: () => QueueManager | null, log: Logger): Map<string, ControlHandler> {
  const queue = (): QueueManager => {
    const m = current();
    if (m === null) throw new ControlError('the queue is not open: its state cannot be written (see the server log)');
    return m;
  };
  const acted = (op: string, queueId: string, isFound: boolean): { queueId: string; found: boolean } => {
    if (isFound) log.info({ queueId, op }, `queue ${op} by the operator`);
    return { queueId, found: isFound };
  };
  return new Map<string, ControlHandler>([
    ['queue.list', async () => queue().list()],
    [
      'queue.show',
      async (args) => {
        const id = oneId('show', args);
        const entry = queue().show(id);
        if (entry === null) throw new ControlError(`no message ${id} in the queue`);
        return entry;
      },
    ],
    [
      'queue.flush',
      async (args) => {
        if (args.length > 1) throw new ControlError('queue flush takes at most one queue id or domain');
        const woken = queue().flush(args[0]);
        log.info({ target: args[0] ?? 'all', woken }, 'queue flush by the operator');
        return { woken };
      },
    ],
    ['queue.delete', async (args) => acted('delete', oneId('delete', args), await queue().remove(oneId('delete', args)))],
    ['queue.hold', async (args) => acted('hold', oneId('hold', args), await queue().hold(oneId('hold', args)))],
    ['queue.release', async (args) => acted('release', oneId('release', args), await queue().release(oneId('release', args)))],
    ['queue.bounce', async (args) => acted('bounce', oneId('bounce', args), await queue().bounce(oneId('bounce', args)))],
    ['queue.shape', async () => queue().shape()],
  ]);
}
