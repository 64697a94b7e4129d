// `portcullis verdicts list [NETWORK|ADDRESS]` and `portcullis verdicts forget NETWORK|ADDRESS`:
// what verdict memory remembers about whom, and lifting a false positive. Reads and deletes the
// records in the configured state store itself (sqlite in the spool directory, or the Redis every
// node shares), so it works whether or not a server runs and on any node of a cluster. After a
// forget it tells the server on this spool, if one answers, to drop what its processes cached
// of the store (src/server/supervisor.ts, 'verdicts.forgotten'), so the refusal is lifted there at
// once; another node sharing a Redis store re-reads within its recall cache's 5 s.
// Safe while the server runs: each record is deleted with the store's own atomic delete.

import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/types.ts';
import { forgetVerdicts, listVerdicts, parseVerdictTarget, type RememberedVerdict } from '../policy/verdict-memory.ts';
import { ControlError, sendControl } from '../server/control.ts';
import { openStateStore, SQLITE_STATE_FILE } from '../store/open.ts';

export const VERDICTS_USAGE = 'usage: portcullis verdicts list [NETWORK|ADDRESS] | portcullis verdicts forget NETWORK|ADDRESS';

function iso(ms: number | null): string {
  return ms === null ? '-' : new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** One line per record: network, check/stage, action, since, until, the reply; then a count. */
export function formatVerdicts(list: readonly RememberedVerdict[]): string {
  if (list.length === 0) return 'nothing remembered\n';
  let out = '';
  for (const v of list) {
    out += `${v.network} ${v.check}/${v.stage} ${v.action} since ${iso(v.atMs)} until ${iso(v.untilMs)}${v.key === '' ? '' : ` key=${v.key.slice(0, 200)}`}\n    ${v.reply.slice(0, 300)}\n`;
  }
  return `${out}-- ${list.length} remembered refusal${list.length === 1 ? '' : 's'}\n`;
}

export async function verdictsCommand(cfg: Config, args: readonly string[], out: (t: string) => void, err: (t: string) => void): Promise<number> {
  const [op, targetText, ...extra] = args;
  if ((op !== 'list' && op !== 'forget') || extra.length > 0 || (op === 'forget' && targetText === undefined)) {
    err(VERDICTS_USAGE);
    return 2;
  }
  const target = targetText === undefined ? null : parseVerdictTarget(targetText);
  if (typeof target === 'string') {
    err(target);
    return 2;
  }
  // An embedded store that was never created remembers nothing: do not create it to say so.
  if (cfg.state.store === 'sqlite' && !existsSync(path.join(cfg.spool.dir, SQLITE_STATE_FILE))) {
    out(op === 'list' ? 'nothing remembered\n' : 'nothing remembered: nothing to forget\n');
    return 0;
  }
  let store;
  try {
    store = await openStateStore(cfg.state.store, { dir: cfg.spool.dir });
  } catch (e) {
    err(`cannot open the state store: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
  try {
    if (op === 'list') {
      out(formatVerdicts(await listVerdicts(store, target)));
      return 0;
    }
    const forgotten = await forgetVerdicts(store, target!);
    if (forgotten.length === 0) {
      out(`nothing remembered about ${targetText}\n`);
      return 0;
    }
    out(`forgot ${forgotten.length}:\n${formatVerdicts(forgotten)}`);
    try {
      await sendControl(cfg.spool.dir, { op: 'verdicts.forgotten', args: [targetText!] }, 10_000);
      out('the running server dropped its cached lookups\n');
    } catch (e) {
      if (!(e instanceof ControlError)) throw e;
      if (e.message !== 'not running') err(`the server did not confirm (${e.message}): it re-reads the store within 5 s`);
    }
    return 0;
  } catch (e) {
    err(`state store operation failed: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  } finally {
    await store.close();
  }
}
