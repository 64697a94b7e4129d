// `npm run bench:filters` (issue 12): what content filters cost on acceptance. Portcullis and
// Postfix, in the same run, under smtp-source's 64 KiB messages, with the same filter daemons:
//   none   no filter;
//   dkim   one milter, opendkim signing (d=example.test; smtp-source sends From: sender@example.test
//          from 127.0.0.1, one of opendkim's internal hosts), as a [[milter]] / smtpd_milters;
//   clamd  virus scanning by one clamd (a one-signature database, no freshclam; started as the tests
//          start it, test/helpers/scanners.ts): Portcullis's own [clamd] check (INSTREAM), Postfix
//          through clamav-milter in front of the same clamd;
//   both   clamd and opendkim.
// For each variant and session count, both servers are started afresh side by side (each idle
// while the other is loaded), warmed up, and their runs alternate, so a change in the machine's
// other load hits both alike. Then, per variant, one session sends messages one after another:
// its time per message, minus the same with no filter, is the latency a filter adds per message.
// The filter daemons' CPU is read from /proc apart from the servers' and reported beside it.
// Every load has a message count and a time limit; every process started here is stopped by its
// PID (Postfix by `postfix stop` on its private instance). Linux only; the Postfix peer needs root.
//
//   npm run -s bench:filters -- [--quick] [--sessions 20,100] [--variants none,dkim,clamd,both] [--debug]

import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { startOpendkim, type Opendkim } from '../test/helpers/milter-peers.ts';
import { type Scanner, startClamd } from '../test/helpers/scanners.ts';
import { type Cell, runLoad, type RunResult, waitForQuiet } from './load.ts';
import { startPortcullis } from './portcullis.ts';
import { startPostfix } from './postfix.ts';
import { sampleTree } from './proc.ts';
import { type CellSummary, noiseNote, summarize } from './report.ts';
import type { RunningServer } from './servers.ts';
import { commitOf, findExecutable, HOST, runCommand, spawnLogged, stopTree, waitForFreePort, waitForListener } from './util.ts';

const USAGE = `usage: npm run -s bench:filters -- [--quick] [--sessions 20,100] [--variants none,dkim,clamd,both] [--debug]
  --quick      1 run per cell instead of 3, 200 messages per run instead of 1,000 (a smoke test)
  --sessions   parallel smtp-source sessions, one cell each (default 20,100)
  --variants   the filter sets to measure (default all four; "none" is the baseline of the others)
  --debug      keep the scratch directory (configs, logs) and turn on Postfix's mail log`;

const VARIANTS = ['none', 'dkim', 'clamd', 'both'] as const;
type Variant = (typeof VARIANTS)[number];
const SERVERS = ['portcullis', 'postfix'] as const;
type Server = (typeof SERVERS)[number];
const NAMES: Record<Server, string> = { portcullis: 'Portcullis', postfix: 'Postfix' };
const LABELS: Record<Variant, string> = { none: 'none', dkim: 'opendkim (milter)', clamd: 'clamd', both: 'clamd + opendkim' };
/** Apart from the other benches' ports, so a stale server there is never measured. */
const PORTS = { portcullis: 2624, postfix: 2604, clamavMilter: 2642 } as const;
const MESSAGE_BYTES = 64 * 1024;
/** CPU per message and working filter (opendkim signing, clamd scanning) below which it did not do its work. */
const MIN_FILTER_MS_PER_MSG = 1.0;
/** smtp-source -f: the From: field opendkim signs for (its Domain). */
const SENDER = 'sender@example.test';

const uses = (variant: Variant, filter: 'dkim' | 'clamd'): boolean => variant === filter || variant === 'both';
const log = (line: string): void => void process.stderr.write(`${line}\n`);

type Daemon = { pid: number; version: string; stop: () => Promise<void> };

/** clamav-milter in front of the clamd above, for the Postfix peer: reject infected, defer on failure. */
async function startClamavMilter(dir: string, clamdPort: number): Promise<Daemon> {
  const milter = findExecutable('clamav-milter');
  if (milter === undefined) throw new Error('clamav-milter is not installed (apt-get install clamav-milter)');
  const conf = join(dir, 'clamav-milter.conf');
  writeFileSync(
    conf,
    [
      `MilterSocket inet:${PORTS.clamavMilter}@${HOST}`,
      'Foreground yes',
      `PidFile ${join(dir, 'clamav-milter.pid')}`,
      `ClamdSocket tcp:${HOST}:${clamdPort}`,
      // No LocalNet: mail from loopback is scanned too (a LocalNet client's mail is not).
      'OnClean Accept',
      'OnInfected Reject',
      'OnFail Defer',
      'AddHeader No',
      '',
    ].join('\n'),
  );
  if (!(await waitForFreePort(PORTS.clamavMilter, 10_000))) throw new Error(`port ${PORTS.clamavMilter} is in use`);
  const child = spawnLogged(milter, ['-c', conf], { cwd: dir, logPath: join(dir, 'clamav-milter.log') });
  // It takes SIGTERM as a request to finish its sessions, and may not exit: SIGKILL after 2 s.
  try {
    await waitForListener(PORTS.clamavMilter, 30_000, child.exitReason);
  } catch (error) {
    await stopTree(child.pid, 2000);
    throw error;
  }
  const version = (await runCommand(milter, ['--version'], { timeoutMs: 10_000 })).stdout.trim();
  return { pid: child.pid, version, stop: () => stopTree(child.pid, 2000) };
}

type Filters = { opendkim?: Opendkim & { pid?: number }; clamd?: Scanner & { pid?: number }; clamavMilter?: Daemon };

/** The filter daemons one server's variant uses (Postfix reaches clamd through clamav-milter). */
function filterPids(filters: Filters, server: Server, variant: Variant): number[] {
  const pids: Array<number | undefined> = [];
  if (uses(variant, 'dkim')) pids.push(filters.opendkim?.pid);
  if (uses(variant, 'clamd')) pids.push(filters.clamd?.pid, server === 'postfix' ? filters.clamavMilter?.pid : undefined);
  return pids.filter((pid): pid is number => pid !== undefined);
}

/** The PID a daemon wrote to its pid file, if it did. */
function pidIn(path: string): number | undefined {
  try {
    return Number(readFileSync(path, 'utf8').trim()) || undefined;
  } catch {
    return undefined;
  }
}

const filtersCpu = (pids: readonly number[]): number => pids.reduce((sum, pid) => sum + sampleTree(pid).cpuSeconds, 0);

function portcullisToml(filters: Filters, variant: Variant): string {
  const out: string[] = [];
  if (uses(variant, 'clamd')) out.push('[clamd]', `address = "${HOST}:${filters.clamd?.port}"`, 'on_failure = "tempfail"');
  if (uses(variant, 'dkim')) out.push('[[milter]]', `address = "${HOST}:${filters.opendkim?.port}"`, 'on_failure = "tempfail"');
  return `${out.join('\n')}\n`;
}

function postfixMainCf(filters: Filters, variant: Variant): string[] {
  const milters: string[] = [];
  if (uses(variant, 'clamd')) milters.push(`inet:${HOST}:${PORTS.clamavMilter}`);
  if (uses(variant, 'dkim')) milters.push(`inet:${HOST}:${filters.opendkim?.port}`);
  if (milters.length === 0) return [];
  return [`smtpd_milters = ${milters.join(', ')}`, 'milter_protocol = 6', 'milter_default_action = tempfail'];
}

type Measured = { summary: CellSummary; filterMsPerMsg: number | null };
type Serial = { ok: true; msPerMsg: number; filterMsPerMsg: number } | { ok: false; error: string };

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

const fixed = (value: number | null | undefined, digits: number): string => (value === null || value === undefined || !Number.isFinite(value) ? '–' : value.toFixed(digits));

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      sessions: { type: 'string', default: '20,100' },
      variants: { type: 'string', default: VARIANTS.join(',') },
      debug: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    log(USAGE);
    return 0;
  }
  const sessionCounts = values.sessions.split(',').map(Number);
  const variants = values.variants.split(',').map((v) => v.trim()) as Variant[];
  if (sessionCounts.some((n) => !Number.isInteger(n) || n < 1 || n > 500) || variants.some((v) => !VARIANTS.includes(v))) {
    log(USAGE);
    return 2;
  }
  const smtpSource = findExecutable('smtp-source');
  if (smtpSource === undefined) {
    log('smtp-source not found: it ships in the postfix package (bash scripts/test-deps.sh installs it)');
    return 1;
  }
  const missing = [
    ...(variants.some((v) => uses(v, 'dkim')) && findExecutable('opendkim') === undefined ? ['opendkim (apt-get install opendkim)'] : []),
    ...(variants.some((v) => uses(v, 'clamd')) && findExecutable('clamd') === undefined ? ['clamd (apt-get install clamav-daemon)'] : []),
    ...(variants.some((v) => uses(v, 'clamd')) && findExecutable('clamav-milter') === undefined ? ['clamav-milter (apt-get install clamav-milter)'] : []),
  ];
  if (missing.length > 0) {
    log(`missing for the variants asked for: ${missing.join(', ')}`);
    return 1;
  }
  const quick = values.quick;
  const runs = quick ? 1 : 3;
  const messages = quick ? 200 : 1000;
  const warmUpMessages = quick ? 60 : 200;
  const serialMessages = quick ? 30 : 100;
  const invocationTimeoutMs = quick ? 60_000 : 120_000;
  const quietWaitMs = quick ? 5_000 : 30_000;
  const repoDir = join(import.meta.dirname, '..');
  // The [clamd] check is Portcullis's own; at a commit without it, its clamd variants are not run.
  const portcullisHasClamd = existsSync(join(repoDir, 'src/filters/clamd.ts'));
  const runsOn = (server: Server, variant: Variant): boolean => server === 'postfix' || portcullisHasClamd || !uses(variant, 'clamd');

  const scratch = mkdtempSync(join(tmpdir(), 'portcullis-bench-filters-'));
  chmodSync(scratch, 0o755);
  const filters: Filters = {};
  const running = new Set<RunningServer>();
  const cleanUp = async (): Promise<void> => {
    for (const server of running) await server.stop();
    running.clear();
    await filters.clamavMilter?.stop();
    await filters.clamd?.stop();
    await filters.opendkim?.stop();
    if (!values.debug) rmSync(scratch, { recursive: true, force: true });
    else log(`scratch kept: ${scratch}`);
  };
  for (const name of ['SIGINT', 'SIGTERM'] as const) {
    process.once(name, () => {
      log(`\n${name}: stopping the servers and filters`);
      void cleanUp().finally(() => process.exit(130));
    });
  }

  const results = new Map<string, Measured>();
  const serial = new Map<string, Serial>();
  const otherCores: number[] = [];
  const versions: string[] = [];
  const startedAt = Date.now();
  try {
    if (variants.some((v) => uses(v, 'dkim'))) {
      const opendkim = await startOpendkim();
      const pid = pidIn(join(opendkim.dir, 'opendkim.pid'));
      filters.opendkim = Object.assign(opendkim, { pid });
      const version = (await runCommand(findExecutable('opendkim') as string, ['-V'], { timeoutMs: 10_000 })).stdout.split('\n')[0]?.replace(/^opendkim: /, '') ?? '';
      versions.push(`${version}, signing with a 2048-bit RSA key, relaxed/relaxed, on ${HOST}:${opendkim.port}${pid === undefined ? ' (PID unknown: its CPU is not counted)' : ''}`);
    }
    if (variants.some((v) => uses(v, 'clamd'))) {
      const clamd = await startClamd();
      const pid = pidIn(join(clamd.dir, 'clamd.pid'));
      filters.clamd = Object.assign(clamd, { pid });
      const dir = join(scratch, 'clamav-milter');
      mkdirSync(dir);
      filters.clamavMilter = await startClamavMilter(dir, clamd.port);
      const version = (await runCommand(findExecutable('clamd') as string, ['--version'], { timeoutMs: 10_000 })).stdout.trim();
      versions.push(
        `${version} clamd (one-signature database, MaxThreads 4) on ${HOST}:${clamd.port}${pid === undefined ? ' (PID unknown: its CPU is not counted)' : ''}`,
        `${filters.clamavMilter.version} (for Postfix: OnClean Accept, OnInfected Reject, AddHeader No)`,
      );
    }

    for (const [cellIndex, sessions] of sessionCounts.entries()) {
      for (const variant of variants) {
        const servers = SERVERS.filter((server) => runsOn(server, variant));
        for (const server of SERVERS) if (!servers.includes(server)) results.set(`${variant} ${sessions} ${server}`, { summary: { ok: false, notRun: true }, filterMsPerMsg: null });
        log(`== ${sessions} sessions, filters: ${LABELS[variant]}`);
        const started = new Map<Server, RunningServer>();
        for (const server of servers) {
          const dir = join(scratch, `${server}-${sessions}-${variant}`);
          mkdirSync(dir, { mode: 0o755 });
          chmodSync(dir, 0o755);
          try {
            if (!(await waitForFreePort(PORTS[server], 10_000))) throw new Error(`port ${PORTS[server]} is already in use`);
            const common = { port: PORTS[server], scratchDir: dir, repoDir, debug: values.debug, log };
            const s = server === 'portcullis' ? await startPortcullis({ ...common, portcullisToml: portcullisToml(filters, variant) }) : await startPostfix({ ...common, postfixMainCf: postfixMainCf(filters, variant) });
            started.set(server, s);
            running.add(s);
            if (versions.every((line) => !line.startsWith(NAMES[server]))) versions.unshift(`${NAMES[server]} ${s.version}`);
          } catch (error) {
            const reason = error instanceof Error ? error.message : String(error);
            log(`   ${NAMES[server]} failed to start: ${reason}`);
            results.set(`${variant} ${sessions} ${server}`, { summary: { ok: false, error: reason }, filterMsPerMsg: null });
          }
        }
        const cell: Cell = { sessions, messageBytes: MESSAGE_BYTES, reuseConnection: false, batch: messages, batches: 1, sender: SENDER };
        const measured = new Map<Server, { runs: RunResult[]; filterMs: number[] }>();
        for (const [server, s] of started) {
          const warmUp = await runLoad(smtpSource, PORTS[server], { ...cell, batch: warmUpMessages }, s.rootPid, invocationTimeoutMs);
          if (!warmUp.ok) log(`   ${NAMES[server]} warm-up failed: ${warmUp.error}`);
          measured.set(server, { runs: [], filterMs: [] });
        }
        // Alternate the servers run by run; a failed run ends that server's cell.
        for (let i = 0; i < runs; i++) {
          for (const [server, s] of started) {
            const m = measured.get(server) as { runs: RunResult[]; filterMs: number[] };
            if (m.runs.some((r) => !r.ok)) continue;
            const quiet = await waitForQuiet(quietWaitMs);
            if (!quiet.quiet) log(`   the machine is busy with other work; measuring anyway after ${(quiet.waitedMs / 1000).toFixed(0)} s`);
            const pids = filterPids(filters, server, variant);
            const filterBefore = filtersCpu(pids);
            const wallStart = performance.now();
            const gone = s.failure();
            const result: RunResult = gone === undefined ? await runLoad(smtpSource, PORTS[server], cell, s.rootPid, invocationTimeoutMs) : { ok: false, error: gone };
            const filterSeconds = filtersCpu(pids) - filterBefore;
            m.runs.push(result);
            if (result.ok) {
              // The filter daemons are part of the load, not other work on the machine.
              otherCores.push(Math.max(0, result.otherCores - filterSeconds / ((performance.now() - wallStart) / 1000)));
              m.filterMs.push((filterSeconds / result.messages) * 1000);
            }
            log(
              `   ${NAMES[server]} run ${i + 1}: ${
                result.ok
                  ? `${Math.round(result.messages / result.seconds)} msg/s, ${((result.cpuSeconds / result.messages) * 1000).toFixed(2)} ms CPU/msg, filters ${((filterSeconds / result.messages) * 1000).toFixed(2)} ms CPU/msg`
                  : `FAILED: ${result.error}`
              }`,
            );
          }
        }
        for (const [server, m] of measured) {
          let summary = summarize(m.runs);
          const filterMsPerMsg = summary.ok && m.filterMs.length > 0 ? median(m.filterMs) : null;
          // Signing with RSA-2048 and scanning 64 KiB each take well over the minimum: filters
          // that used less did not do their work (opendkim that signs nothing takes ~0.6 ms).
          const working = (uses(variant, 'dkim') ? 1 : 0) + (uses(variant, 'clamd') ? 1 : 0);
          const known = filterPids(filters, server, variant).length === working + (uses(variant, 'clamd') && server === 'postfix' ? 1 : 0);
          if (summary.ok && filterMsPerMsg !== null && working > 0 && known && filterMsPerMsg < MIN_FILTER_MS_PER_MSG * working) {
            summary = { ok: false, error: `the filters used ${filterMsPerMsg.toFixed(2)} ms CPU per message: they did not sign or scan the messages` };
          }
          results.set(`${variant} ${sessions} ${server}`, { summary, filterMsPerMsg });
        }
        // One session, one message per connection, one after another: the time a message takes.
        if (cellIndex === 0) {
          for (const [server, s] of started) {
            const pids = filterPids(filters, server, variant);
            const filterBefore = filtersCpu(pids);
            const result = await runLoad(smtpSource, PORTS[server], { ...cell, sessions: 1, batch: serialMessages }, s.rootPid, invocationTimeoutMs);
            const filterSeconds = filtersCpu(pids) - filterBefore;
            serial.set(`${variant} ${server}`, result.ok ? { ok: true, msPerMsg: (result.seconds / result.messages) * 1000, filterMsPerMsg: (filterSeconds / result.messages) * 1000 } : { ok: false, error: result.error });
            log(`   ${NAMES[server]} one session: ${result.ok ? `${((result.seconds / result.messages) * 1000).toFixed(1)} ms per message` : `FAILED: ${result.error}`}`);
          }
        }
        for (const s of started.values()) {
          await s.stop();
          running.delete(s);
        }
      }
    }
  } finally {
    await cleanUp();
  }

  const report = render({ quick, runs, messages, serialMessages, sessionCounts, variants, results, serial, versions, otherCores, portcullisHasClamd, repoDir, minutes: (Date.now() - startedAt) / 60_000 });
  process.stdout.write(report);
  const resultsDir = join(repoDir, '.bench/results');
  mkdirSync(resultsDir, { recursive: true });
  const saved = join(resultsDir, `filters-${new Date().toISOString().replaceAll(':', '-')}.md`);
  writeFileSync(saved, report);
  log(`\nsaved to ${saved}`);
  const failed = [...results.values()].some((m) => !m.summary.ok && 'error' in m.summary) || [...serial.values()].some((s) => !s.ok);
  return failed ? 1 : 0;
}

type RenderInput = {
  quick: boolean;
  runs: number;
  messages: number;
  serialMessages: number;
  sessionCounts: number[];
  variants: Variant[];
  results: Map<string, Measured>;
  serial: Map<string, Serial>;
  versions: string[];
  otherCores: number[];
  portcullisHasClamd: boolean;
  repoDir: string;
  minutes: number;
};

function render(input: RenderInput): string {
  const { results, serial } = input;
  const rate = (variant: Variant, sessions: number, server: Server): number | null => {
    const s = results.get(`${variant} ${sessions} ${server}`)?.summary;
    return s?.ok === true ? s.messagesPerSecond : null;
  };
  const cpu = (variant: Variant, sessions: number, server: Server): number | null => {
    const s = results.get(`${variant} ${sessions} ${server}`)?.summary;
    return s?.ok === true ? s.cpuSecondsPer1000 : null;
  };
  const filterCpu = (variant: Variant, sessions: number, server: Server): number | null => results.get(`${variant} ${sessions} ${server}`)?.filterMsPerMsg ?? null;
  const ratio = (a: number | null, b: number | null): string => (a === null || b === null ? '–' : (a / b).toFixed(2));
  const overhead = (variant: Variant, sessions: number, server: Server): string => {
    const base = rate('none', sessions, server);
    const with_ = rate(variant, sessions, server);
    return variant === 'none' || base === null || with_ === null ? '–' : `${((1 - with_ / base) * 100).toFixed(0)} %`;
  };
  const runsText = input.runs === 1 ? '1 run' : `median of ${input.runs} runs`;
  const cpuModel = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const out: string[] = [
    `### ${input.quick ? 'Quick run' : 'Run'} of ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
    '',
    `${cpus().length} × ${cpuModel}, Linux ${release()}; smtp-source on the same machine, 64 KiB messages, one message per connection, ${input.messages} messages per run, ${runsText} per cell; ${input.minutes.toFixed(1)} min in all.`,
    '',
    ...input.versions.map((line) => (line.startsWith('Portcullis') ? `- ${line}, commit ${commitOf(input.repoDir)}` : `- ${line}`)),
    '',
    noiseNote(input.otherCores),
    '',
  ];
  if (!input.portcullisHasClamd && input.variants.some((v) => uses(v, 'clamd'))) out.push('Portcullis has no [clamd] check at this commit: its clamd variants are not run.', '');
  out.push(
    `#### Acceptance throughput and CPU (${runsText})`,
    '',
    '| filters | sessions | Portcullis msgs/s | Postfix msgs/s | Portcullis/Postfix | Portcullis overhead | Postfix overhead | Portcullis CPU ms/msg | + its filters | Postfix CPU ms/msg | + its filters |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  );
  for (const sessions of input.sessionCounts) {
    for (const variant of input.variants) {
      const p = rate(variant, sessions, 'portcullis');
      const f = rate(variant, sessions, 'postfix');
      out.push(
        `| ${LABELS[variant]} | ${sessions} | ${fixed(p, 0)} | ${fixed(f, 0)} | ${ratio(p, f)} | ${overhead(variant, sessions, 'portcullis')} | ${overhead(variant, sessions, 'postfix')} | ${fixed(cpu(variant, sessions, 'portcullis'), 2)} | ${fixed(filterCpu(variant, sessions, 'portcullis'), 2)} | ${fixed(cpu(variant, sessions, 'postfix'), 2)} | ${fixed(filterCpu(variant, sessions, 'postfix'), 2)} |`,
      );
    }
  }
  const serialMs = (variant: Variant, server: Server): number | null => {
    const s = serial.get(`${variant} ${server}`);
    return s?.ok === true ? s.msPerMsg : null;
  };
  const added = (variant: Variant, server: Server): string => {
    const base = serialMs('none', server);
    const with_ = serialMs(variant, server);
    return variant === 'none' || base === null || with_ === null ? '–' : `${(with_ - base).toFixed(1)}`;
  };
  // Little's law at load: each of N sessions has one message in flight, so time per message = N / rate.
  const addedAtLoad = (variant: Variant, sessions: number, server: Server): string => {
    const base = rate('none', sessions, server);
    const with_ = rate(variant, sessions, server);
    return variant === 'none' || base === null || with_ === null ? '–' : `${((sessions / with_ - sessions / base) * 1000).toFixed(1)}`;
  };
  out.push(
    '',
    `#### Latency per message: one session (${input.serialMessages} messages one after another), and at load (sessions ÷ msgs/s)`,
    '',
    `| filters | Portcullis ms/msg, 1 session | added | Postfix ms/msg, 1 session | added | ${input.sessionCounts.map((n) => `Portcullis added at ${n} | Postfix added at ${n}`).join(' | ')} |`,
    `| --- | ---: | ---: | ---: | ---: | ${input.sessionCounts.map(() => '---: | ---:').join(' | ')} |`,
  );
  for (const variant of input.variants) {
    out.push(
      `| ${LABELS[variant]} | ${fixed(serialMs(variant, 'portcullis'), 1)} | ${added(variant, 'portcullis')} | ${fixed(serialMs(variant, 'postfix'), 1)} | ${added(variant, 'postfix')} | ${input.sessionCounts.map((n) => `${addedAtLoad(variant, n, 'portcullis')} | ${addedAtLoad(variant, n, 'postfix')}`).join(' | ')} |`,
    );
  }
  const failures = [
    ...[...results.entries()].flatMap(([key, m]) => (!m.summary.ok && 'error' in m.summary ? [`- ${key}: ${m.summary.error}`] : [])),
    ...[...serial.entries()].flatMap(([key, s]) => (s.ok ? [] : [`- ${key}, one session: ${s.error}`])),
  ];
  if (failures.length > 0) out.push('', 'Failures:', '', ...failures);
  return `${out.join('\n')}\n`;
}

process.exitCode = await main();
