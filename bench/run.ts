// `npm run bench`: Postfix's smtp-source against Portcullis and, in the same run, against Postfix and
// Haraka under the same load; then the policy scenario (policy.ts): Portcullis with DNS lists, SPF
// and greylisting against the plain engine. Prints markdown tables for docs/benchmarks.md on stdout
// (progress on stderr). Starts every server itself and stops each by PID (Postfix by `postfix
// stop`); every run has a message count and a time limit. Linux only (reads /proc); the Postfix
// peer needs root.
//
//   npm run bench -- [--quick] [--only portcullis,postfix,haraka] [--policy-only] [--debug] [--admission]

import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type Cell, runLoad, type RunResult, waitForQuiet } from './load.ts';
import { runPolicyScenario } from './policy.ts';
import { type CellSummary, cellLabel, noiseNote, renderTables, summarize } from './report.ts';
import { DISPLAY_NAMES, PORTS, type RunningServer, SERVER_NAMES, type ServerName, startServer } from './servers.ts';
import { commitOf, findExecutable } from './util.ts';

const USAGE = `usage: npm run bench -- [--quick] [--only portcullis,postfix,haraka] [--policy-only] [--debug] [--admission]
  --quick        1 run per cell instead of 3, smaller message counts (a smoke test)
  --only         the servers to measure (default: all three); the policy scenario runs when
                 portcullis is one of them
  --policy-only  only the policy scenario (Portcullis with and without DNS lists, SPF, greylisting)
  --debug        keep the scratch directory and turn on Postfix's mail log
  --admission    Portcullis with every connection judged by the admission limits (raised so none
                 refuses), not let through by the default allow list: run it against a plain run
                 to see what admission costs (the policy scenario is skipped)`;

/**
 * --admission: Portcullis judges every connection by the admission limits (server/admission.ts)
 * instead of letting the benchmark's client (127.0.0.1) through on the default allow list. The
 * limits are raised so that nothing is refused: the run measures what counting costs, and with
 * per-address limits this high each worker's local share covers the load, so no connection waits
 * for the primary's pool (its IPC is not on this path).
 */
const ADMISSION_TOML = `[access]
allow = []
[limits]
max_connections = 100000
max_connections_per_ip = 100000
max_connections_per_network = 100000
connection_rate_per_ip = "1000000/min"
`;

const SESSIONS = [20, 100];
const MESSAGE_BYTES = [1024, 64 * 1024];
/**
 * Portcullis closes a session after smtp.max_transactions (default 100) MAIL commands, and under -d
 * smtp-source's sessions share one message counter, so a fast session can take more than its
 * share: one invocation sends at most 40 messages per session on average, and a run repeats
 * invocations until it has sent its count.
 */
const MAX_MESSAGES_PER_SESSION = 40;
/** Runs per cell of the policy scenario (see runPolicyScenario). */
const POLICY_RUNS = 5;

function runsText(n: number): string {
  return n === 1 ? '1 run' : `${n} runs`;
}

function plan(quick: boolean): Cell[] {
  const cells: Cell[] = [];
  for (const sessions of SESSIONS) {
    for (const messageBytes of MESSAGE_BYTES) {
      const messages = messageBytes <= 1024 ? (quick ? 400 : 3000) : quick ? 100 : 1000;
      for (const reuseConnection of [false, true]) {
        const batch = reuseConnection ? Math.min(messages, sessions * MAX_MESSAGES_PER_SESSION) : messages;
        cells.push({ sessions, messageBytes, reuseConnection, batch, batches: Math.ceil(messages / batch) });
      }
    }
  }
  return cells;
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      'policy-only': { type: 'boolean', default: false },
      debug: { type: 'boolean', default: false },
      admission: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    log(USAGE);
    return 0;
  }
  const selected = (values.only ?? SERVER_NAMES.join(',')).split(',').map((name) => name.trim());
  const unknown = selected.filter((name) => !(SERVER_NAMES as readonly string[]).includes(name));
  if (unknown.length > 0) {
    log(`unknown server(s): ${unknown.join(', ')}\n${USAGE}`);
    return 2;
  }
  const policyOnly = values['policy-only'];
  if (policyOnly && values.only !== undefined) {
    log(`--policy-only and --only do not go together\n${USAGE}`);
    return 2;
  }
  const peerServers = policyOnly ? [] : SERVER_NAMES.filter((server) => selected.includes(server));
  // --admission compares the plain cells only; the policy scenario has a baseline of its own.
  const runPolicy = policyOnly || (selected.includes('portcullis') && !values.admission);

  const smtpSource = findExecutable('smtp-source');
  if (smtpSource === undefined) {
    log('smtp-source not found: it ships in the postfix package (bash scripts/test-deps.sh installs it)');
    return 1;
  }

  const quick = values.quick;
  const runs = quick ? 1 : 3;
  const invocationTimeoutMs = quick ? 60_000 : 120_000;
  const quietWaitMs = quick ? 5_000 : 30_000;
  const cells = plan(quick);
  const repoDir = join(import.meta.dirname, '..');
  // Every server's spool/queue lives here, on one file system.
  const scratchDir = mkdtempSync(join(tmpdir(), 'portcullis-bench-'));
  chmodSync(scratchDir, 0o755);

  let current: RunningServer | undefined;
  const policyCleanups = new Set<() => Promise<void>>();
  const cleanUp = async () => {
    await current?.stop();
    current = undefined;
    for (const stop of policyCleanups) await stop();
    if (!values.debug) rmSync(scratchDir, { recursive: true, force: true });
  };
  for (const name of ['SIGINT', 'SIGTERM'] as const) {
    process.once(name, () => {
      log(`\n${name}: stopping the server under test`);
      void cleanUp().finally(() => process.exit(130));
    });
  }

  const results = new Map<Cell, Record<ServerName, CellSummary>>();
  for (const cell of cells) {
    results.set(cell, { portcullis: { ok: false, notRun: true }, postfix: { ok: false, notRun: true }, haraka: { ok: false, notRun: true } });
  }
  const versions: string[] = [];
  const otherCores: number[] = [];
  const startedAt = Date.now();

  // Each cell gets a freshly started server, so what one cell leaves behind (a grown heap, a queue
  // directory full of entries) does not show up in the next cell's numbers.
  for (const name of peerServers) {
    log(`== ${DISPLAY_NAMES[name]} on port ${PORTS[name]}`);
    for (const [index, cell] of cells.entries()) {
      const row = results.get(cell) as Record<ServerName, CellSummary>;
      const serverDir = join(scratchDir, `${name}-${index + 1}`);
      mkdirSync(serverDir);
      try {
        current = await startServer(name, { scratchDir: serverDir, repoDir, debug: values.debug, log, ...(values.admission ? { portcullisToml: ADMISSION_TOML } : {}) });
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        log(`   failed to start: ${reason}`);
        // Don't retry a server that cannot start for every cell.
        for (const rest of cells.slice(index)) (results.get(rest) as Record<ServerName, CellSummary>)[name] = { ok: false, error: reason };
        break;
      }
      const server = current;
      if (index === 0) versions.push(`${DISPLAY_NAMES[name]} ${server.version}`);
      // Warm-up (not measured): JIT, worker start-up, Postfix's first smtpd/cleanup processes.
      const warmUp = await runLoad(smtpSource, PORTS[name], { ...cell, batch: Math.min(cell.batch, quick ? 100 : 400), batches: 1 }, server.rootPid, invocationTimeoutMs);
      if (!warmUp.ok) log(`   warm-up failed: ${warmUp.error}`);
      const cellRuns: RunResult[] = [];
      for (let i = 0; i < runs; i++) {
        const quiet = await waitForQuiet(quietWaitMs);
        if (!quiet.quiet) log(`   the machine is busy with other work; measuring anyway after ${(quiet.waitedMs / 1000).toFixed(0)} s`);
        const gone = server.failure();
        const result: RunResult = gone === undefined ? await runLoad(smtpSource, PORTS[name], cell, server.rootPid, invocationTimeoutMs) : { ok: false, error: gone };
        cellRuns.push(result);
        if (result.ok) otherCores.push(result.otherCores);
        log(
          `   ${cellLabel(cell)} run ${i + 1}: ${
            result.ok
              ? `${Math.round(result.messages / result.seconds)} msg/s, ${result.cpuSeconds.toFixed(2)} s CPU, ${(result.peakPssKiB / 1024).toFixed(0)} MiB PSS, other load ${result.otherCores.toFixed(2)} cores`
              : `FAILED: ${result.error}`
          }`,
        );
        if (!result.ok) break; // the cell has failed; don't spend its other runs' time limits
      }
      row[name] = summarize(cellRuns);
      await server.stop();
      current = undefined;
      if (!values.debug) rmSync(serverDir, { recursive: true, force: true });
    }
  }

  let policyMarkdown = '';
  if (runPolicy) {
    const policy = await runPolicyScenario({
      smtpSource,
      repoDir,
      scratchDir,
      quick,
      debug: values.debug,
      // The overhead is a difference of two noisy medians: five alternating runs each, not three.
      runs: quick ? 1 : POLICY_RUNS,
      invocationTimeoutMs,
      quietWaitMs,
      log,
      cleanups: policyCleanups,
    }).catch((error: unknown) => {
      const reason = error instanceof Error ? error.message : String(error);
      log(`   policy scenario failed: ${reason}`);
      return { versions: [], otherCores: [], markdown: `#### Policy overhead\n\nfailed: ${reason}\n` };
    });
    for (const line of policy.versions) if (!versions.some((known) => known.split(' (')[0] === line.split(' (')[0])) versions.push(line);
    otherCores.push(...policy.otherCores);
    policyMarkdown = policy.markdown;
  }
  await cleanUp();

  const minutes = ((Date.now() - startedAt) / 60_000).toFixed(1);
  const cpu = cpus();
  const header = [
    `### ${quick ? 'Quick run' : 'Run'} of ${new Date().toISOString().slice(0, 10)}`,
    '',
    `${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, Linux ${release()}; load: smtp-source on the same machine; ${runsText(policyOnly ? (quick ? 1 : POLICY_RUNS) : runs)} per cell${runPolicy && !policyOnly && !quick ? ` (${POLICY_RUNS} in the policy scenario)` : ''}; ${minutes} min in all.`,
    '',
    ...versions.map((line) => (line.startsWith('Portcullis') ? `- ${line}, commit ${commitOf(repoDir)}` : `- ${line}`)),
    '',
    noiseNote(otherCores),
    '',
  ];
  const peerMarkdown = peerServers.length > 0 ? renderTables(cells, results, runs) : '';
  const report = `${header.join('\n')}\n${[peerMarkdown, policyMarkdown].filter((part) => part !== '').join('\n')}`;
  process.stdout.write(report);

  const resultsDir = join(repoDir, '.bench/results');
  mkdirSync(resultsDir, { recursive: true });
  const saved = join(resultsDir, `${new Date().toISOString().replaceAll(':', '-')}.md`);
  writeFileSync(saved, report);
  log(`\nsaved to ${saved}`);
  return 0;
}

process.exitCode = await main();
