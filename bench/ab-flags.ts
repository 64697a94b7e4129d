// An A/B of Node options for the Portcullis server (an experiment's V8 flags): the same cells of
// the peer comparison, one fresh server per variant, alternating the variants, CPU per message
// and messages per second side by side. Not part of `npm run bench`; for deciding a flag.
//
//   node bench/ab-flags.ts [--rounds 2] -- "" "--max-semi-space-size=2"

import { mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type Cell, runLoad } from './load.ts';
import { startPortcullis } from './portcullis.ts';
import { findExecutable } from './util.ts';

const { values, positionals } = parseArgs({ options: { rounds: { type: 'string', default: '2' } }, allowPositionals: true });
const variants = positionals.length > 0 ? positionals : ['', '--max-semi-space-size=2'];
const smtpSource = findExecutable('smtp-source');
if (smtpSource === undefined) throw new Error('smtp-source not found (postfix package)');
const repoDir = join(import.meta.dirname, '..');
const cells: Cell[] = [
  { sessions: 20, messageBytes: 1024, reuseConnection: false, batch: 3000, batches: 1 },
  { sessions: 20, messageBytes: 1024, reuseConnection: true, batch: 800, batches: 4 },
  { sessions: 20, messageBytes: 64 * 1024, reuseConnection: true, batch: 800, batches: 2 },
];
const port = 2631;
for (let round = 0; round < Number(values.rounds); round++) {
  for (const variant of variants) {
    const scratchDir = mkdtempSync(join(tmpdir(), 'portcullis-bench-ab-'));
    chmodSync(scratchDir, 0o755);
    const server = await startPortcullis({ port, scratchDir, repoDir, debug: false, log: () => undefined, portcullisNodeArgs: variant.split(' ').filter((a) => a !== '') });
    try {
      const row: string[] = [];
      for (const cell of cells) {
        await runLoad(smtpSource, port, { ...cell, batch: 400, batches: 1 }, server.rootPid, 60_000);
        const r = await runLoad(smtpSource, port, cell, server.rootPid, 120_000);
        if (!r.ok) throw new Error(r.error);
        row.push(`${cell.sessions}s ${cell.messageBytes}B ${cell.reuseConnection ? '-d' : '1/conn'}: ${(r.messages / r.seconds).toFixed(0)} msg/s ${((r.cpuSeconds / r.messages) * 1e6).toFixed(0)} µs CPU/msg (other ${r.otherCores.toFixed(2)})`);
      }
      process.stdout.write(`round ${round} [${variant || 'default'}] ${row.join(' | ')}\n`);
    } finally {
      await server.stop();
      rmSync(scratchDir, { recursive: true, force: true });
    }
  }
}
