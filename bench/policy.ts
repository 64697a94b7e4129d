// The policy scenario of `npm run bench` (issue 5): acceptance throughput of Portcullis with DNS
// lists, SPF and greylisting on, against the plain engine, in the same run under the same load.
// Owns the two configurations, the loopback DNS server (dnsmasq, stopped by its own PID), the
// pre-allowed greylist triplet and the checks that the policy run really exercised the policy.
// Never measures refusals: a run whose smtp-source reports any 4xx/5xx fails, as in load.ts.
//
// Both servers run side by side (idle while the other is loaded) and their runs alternate, so a
// change in the machine's other load during the scenario hits both alike.

import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { tripletKey } from '../src/policy/checks/greylist/check.ts';
import { clientNetwork } from '../src/policy/network.ts';
import { readMessage, scanSpool } from '../src/spool/reader.ts';
import { openStateStore } from '../src/store/open.ts';
import { startDnsServer, type DnsTestServer } from '../test/helpers/dns-server.ts';
import { smtpConnect } from '../test/helpers/smtp-client.ts';
import { type Cell, runLoad, type RunResult, smtpSourceArgs, waitForQuiet } from './load.ts';
import { startPortcullis, type RunningPortcullis } from './portcullis.ts';
import { sampleTree } from './proc.ts';
import { type CellSummary, cellLabel, summarize } from './report.ts';
import { HOST, waitForFreePort } from './util.ts';

/** Apart from the peer comparison's 2601/2611/2621, so a stale server there is never measured. */
export const POLICY_PORTS = { plain: 2622, policy: 2623 } as const;

/** The issue's budget: policy may cost at most this share of the plain engine's messages/s. */
export const OVERHEAD_LIMIT = 0.15;

const SESSIONS = 20;
const MESSAGE_BYTES = 1024;
/** As run.ts: under -d one smtp-source invocation stays below smtp.max_transactions per session. */
const MAX_MESSAGES_PER_SESSION = 40;
const DNSBL_ZONES = ['zen.bench-dns.test', 'list.bench-dns.test'] as const;
/** A second loopback client that both lists name: the probe that shows the DNS-list check is live. */
const LISTED_CLIENT = '127.0.0.2';
const TRIPLET_TTL_SECONDS = 35 * 86_400;

export type PolicyScenarioOptions = {
  smtpSource: string;
  repoDir: string;
  /** A fresh directory of this run; the scenario makes its subdirectories here. */
  scratchDir: string;
  quick: boolean;
  debug: boolean;
  runs: number;
  invocationTimeoutMs: number;
  quietWaitMs: number;
  log: (line: string) => void;
  /** Stops registered here are run by the caller's signal handler. */
  cleanups: Set<() => Promise<void>>;
};

export type PolicyScenarioResult = {
  /** "Portcullis …" and "dnsmasq …". */
  versions: string[];
  /** Other work on the machine per measured run (dnsmasq's own CPU taken out). */
  otherCores: number[];
  /** Markdown: the overhead table and what was verified. */
  markdown: string;
};

type Variant = 'plain' | 'policy';

type CellOutcome = {
  cell: Cell;
  plain: CellSummary;
  policy: CellSummary;
  /** DNS queries the policy server sent during its measured runs, per message. */
  dnsQueriesPerMessage: number | undefined;
  /** dnsmasq's CPU during the policy runs, seconds per 1,000 messages. */
  dnsCpuPer1000: number | undefined;
  checks: string[];
  problems: string[];
};

export function policyCells(quick: boolean): Cell[] {
  const messages = quick ? 400 : 3000;
  return [false, true].map((reuseConnection) => {
    const batch = reuseConnection ? Math.min(messages, SESSIONS * MAX_MESSAGES_PER_SESSION) : messages;
    return { sessions: SESSIONS, messageBytes: MESSAGE_BYTES, reuseConnection, batch, batches: Math.ceil(messages / batch) };
  });
}

/** The envelope smtp-source sends (load.ts decides it; read back so the two cannot drift apart). */
function loadEnvelope(): { sender: string; recipient: string } {
  const args = smtpSourceArgs(policyCells(true)[0], 0);
  const after = (flag: string): string => args[args.indexOf(flag) + 1];
  return { sender: after('-f'), recipient: after('-t') };
}

export function policyToml(dnsServer: string): string {
  return `[policy]
checks = ["dnsbl", "spf", "greylist"]
[dns]
servers = ["${dnsServer}"]
[[dnsbl]]
zone = "${DNSBL_ZONES[0]}"
weight = 2
[[dnsbl]]
zone = "${DNSBL_ZONES[1]}"
answers = ["127.0.0.[2..11]"]
weight = 3
[spf]
enabled = true
[greylist]
enabled = true
`;
}

/**
 * Writes the load's triplet as passed into the sqlite state store of a spool directory, as the
 * greylist check would after a retry, so every measured message takes the "known triplet" path
 * (the auto-allow counter of the network stays unset: the check reads it and the triplet).
 */
export async function preAllowTriplet(spoolDir: string, client: string, sender: string, recipient: string): Promise<void> {
  const store = await openStateStore('sqlite', { dir: spoolDir });
  try {
    const record = { firstMs: Date.now() - 3_600_000, isPassed: true };
    await store.set(tripletKey(clientNetwork(client), sender, recipient), JSON.stringify(record), TRIPLET_TTL_SECONDS);
  } finally {
    await store.close();
  }
}

/** The PID of the dnsmasq this process spawned (the helper does not expose it), to read its CPU. */
function ownDnsmasqPid(): number | undefined {
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (comm === 'dnsmasq' && ppid === process.pid) return pid;
    } catch {
      // exited meanwhile
    }
  }
  return undefined;
}

function dnsmasqVersion(): string {
  for (const path of ['/usr/sbin/dnsmasq', 'dnsmasq']) {
    try {
      const first = execFileSync(path, ['--version'], { encoding: 'utf8', timeout: 5000 }).split('\n')[0];
      return /version (\S+)/i.exec(first)?.[1] ?? first;
    } catch {
      // try the next
    }
  }
  return 'unknown';
}

/** One dialogue up to RCPT; returns the RCPT reply's first line. */
async function probeRcpt(port: number, sender: string, recipient: string, localAddress?: string): Promise<string> {
  const smtp = await smtpConnect(port, localAddress === undefined ? {} : { localAddress });
  try {
    await smtp.send('EHLO probe.bench.test');
    const mail = await smtp.send(`MAIL FROM:<${sender}>`);
    if (!mail.startsWith('250')) return `MAIL refused: ${mail.split('\r\n')[0]}`;
    const rcpt = await smtp.send(`RCPT TO:<${recipient}>`);
    await smtp.send('QUIT').catch(() => '');
    return rcpt.split('\r\n')[0];
  } finally {
    smtp.close();
  }
}

/** How many stored messages carry `Received-SPF: pass` in their header section. */
async function countSpfPass(spoolDir: string): Promise<{ messages: number; withField: number; spfPass: number; sample?: string }> {
  let messages = 0;
  let withField = 0;
  let spfPass = 0;
  let sample: string | undefined;
  for await (const entry of scanSpool(spoolDir)) {
    messages++;
    const message = await readMessage(spoolDir, entry.envelope.queueId, entry.location);
    if (message === null) continue;
    const text = message.content.toString('latin1');
    const end = text.indexOf('\r\n\r\n');
    const header = end < 0 ? text : text.slice(0, end);
    const field = /^Received-SPF:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*/im.exec(header);
    if (field !== null) {
      withField++;
      sample ??= field[0].replace(/\r\n[ \t]+/g, ' ');
      if (/^Received-SPF:\s*pass\b/i.test(field[0])) spfPass++;
    }
  }
  return sample === undefined ? { messages, withField, spfPass } : { messages, withField, spfPass, sample };
}

function rate(summary: CellSummary): number | undefined {
  return summary.ok ? summary.messagesPerSecond : undefined;
}

function cpu(summary: CellSummary): number | undefined {
  return summary.ok ? summary.cpuSecondsPer1000 : undefined;
}

const percent = (value: number): string => `${value >= 0 ? '' : '−'}${Math.abs(value * 100).toFixed(1)} %`;

function failureText(summary: CellSummary): string {
  if (summary.ok) return '';
  return 'notRun' in summary ? 'not run' : `failed: ${summary.error.replaceAll('|', '/').slice(0, 60)}`;
}

export function renderPolicy(outcomes: CellOutcome[], runs: number): string {
  const of = runs === 1 ? '1 run' : `median of ${runs} runs`;
  const out: string[] = [
    `#### Policy overhead (${of}): DNS lists + SPF + greylisting versus the plain engine`,
    '',
    '| load | plain msgs/s | policy msgs/s | throughput overhead | plain CPU s / 1,000 msgs | policy CPU s / 1,000 msgs | CPU overhead | DNS queries / msg | dnsmasq CPU s / 1,000 msgs | under 15 %? |',
    '| --- | --: | --: | --: | --: | --: | --: | --: | --: | :-: |',
  ];
  for (const o of outcomes) {
    const [plainRate, policyRate, plainCpu, policyCpu] = [rate(o.plain), rate(o.policy), cpu(o.plain), cpu(o.policy)];
    const throughput = plainRate !== undefined && policyRate !== undefined ? 1 - policyRate / plainRate : undefined;
    const cpuOverhead = plainCpu !== undefined && policyCpu !== undefined ? policyCpu / plainCpu - 1 : undefined;
    out.push(
      `| ${[
        cellLabel(o.cell),
        plainRate === undefined ? failureText(o.plain) : Math.round(plainRate).toLocaleString('en-US'),
        policyRate === undefined ? failureText(o.policy) : Math.round(policyRate).toLocaleString('en-US'),
        throughput === undefined ? '–' : percent(throughput),
        plainCpu === undefined ? '–' : plainCpu.toFixed(2),
        policyCpu === undefined ? '–' : policyCpu.toFixed(2),
        cpuOverhead === undefined ? '–' : percent(cpuOverhead),
        o.dnsQueriesPerMessage === undefined ? '–' : o.dnsQueriesPerMessage.toFixed(3),
        o.dnsCpuPer1000 === undefined ? '–' : o.dnsCpuPer1000.toFixed(3),
        throughput === undefined || o.problems.length > 0 ? '–' : throughput < OVERHEAD_LIMIT ? 'yes' : '**no**',
      ].join(' | ')} |`,
    );
  }
  out.push('', 'What the policy server did (checked after the measured runs):', '');
  for (const o of outcomes) {
    out.push(`- ${cellLabel(o.cell)}: ${o.checks.join('; ')}.`);
    for (const problem of o.problems) out.push(`  **Not verified: ${problem}.**`);
  }
  out.push('');
  return out.join('\n');
}

export async function runPolicyScenario(opts: PolicyScenarioOptions): Promise<PolicyScenarioResult> {
  const { log } = opts;
  const cells = policyCells(opts.quick);
  const { sender, recipient } = loadEnvelope();
  const senderDomain = sender.slice(sender.lastIndexOf('@') + 1);
  const otherCores: number[] = [];
  const outcomes: CellOutcome[] = [];
  let portcullisVersion = 'Portcullis (not started)';

  log(`== Policy overhead: Portcullis plain on port ${POLICY_PORTS.plain}, with policy on ${POLICY_PORTS.policy}`);
  const dns: DnsTestServer = await startDnsServer({
    zones: ['bench-dns.test', senderDomain],
    records: [
      // SPF: the load's client (127.0.0.1) passes.
      `txt-record=${senderDomain},"v=spf1 ip4:127.0.0.0/8 -all"`,
      // Only the probe's 127.0.0.2 is listed; 127.0.0.1 gets NXDOMAIN, which the check caches.
      ...DNSBL_ZONES.map((zone) => `address=/${LISTED_CLIENT.split('.').reverse().join('.')}.${zone}/127.0.0.2`),
    ],
  });
  const stopDns = () => dns.stop();
  opts.cleanups.add(stopDns);
  const dnsPid = ownDnsmasqPid();
  const dnsCpu = (): number => (dnsPid === undefined ? 0 : sampleTree(dnsPid).cpuSeconds);
  log(`   dnsmasq on ${dns.server}${dnsPid === undefined ? ' (PID not found: its CPU is not reported)' : ''}`);

  try {
    for (const [index, cell] of cells.entries()) {
      const cellDir = join(opts.scratchDir, `policy-${index + 1}`);
      const servers: Partial<Record<Variant, RunningPortcullis>> = {};
      const outcome: CellOutcome = {
        cell,
        plain: { ok: false, notRun: true },
        policy: { ok: false, notRun: true },
        dnsQueriesPerMessage: undefined,
        dnsCpuPer1000: undefined,
        checks: [],
        problems: [],
      };
      outcomes.push(outcome);
      const stopServers = async () => {
        await Promise.all(Object.values(servers).map((server) => server.stop()));
        for (const key of Object.keys(servers)) delete servers[key as Variant];
      };
      opts.cleanups.add(stopServers);
      try {
        for (const variant of ['plain', 'policy'] as const) {
          const port = POLICY_PORTS[variant];
          if (!(await waitForFreePort(port, 10_000))) throw new Error(`port ${port} is already in use`);
          const scratchDir = join(cellDir, variant);
          mkdirSync(scratchDir, { recursive: true });
          servers[variant] = await startPortcullis({
            port,
            scratchDir,
            repoDir: opts.repoDir,
            debug: opts.debug,
            log,
            // Not a relay client: the DNS-list and SPF checks skip relay clients.
            relayNetworks: [],
            ...(variant === 'policy'
              ? {
                  extraToml: policyToml(dns.server),
                  beforeStart: ({ spoolDir }) => preAllowTriplet(spoolDir, HOST, sender, recipient),
                }
              : {}),
          });
          portcullisVersion = `Portcullis ${servers[variant].version}`;
        }
        const plain = servers.plain as RunningPortcullis;
        const policy = servers.policy as RunningPortcullis;

        // Warm-up (not measured), then probes that show each check is live on the policy server
        // and absent on the plain one.
        let warmUpQueries = 0;
        for (const variant of ['plain', 'policy'] as const) {
          const server = servers[variant] as RunningPortcullis;
          const queriesBefore = dns.queryCount();
          const warmUp = await runLoad(opts.smtpSource, POLICY_PORTS[variant], { ...cell, batch: Math.min(cell.batch, opts.quick ? 100 : 400), batches: 1 }, server.rootPid, opts.invocationTimeoutMs);
          if (!warmUp.ok) log(`   ${variant} warm-up failed: ${warmUp.error}`);
          if (variant === 'policy') warmUpQueries = dns.queryCount() - queriesBefore;
        }
        const otherSender = `probe@${senderDomain}`;
        const greylisted = await probeRcpt(POLICY_PORTS.policy, otherSender, recipient);
        const listed = await probeRcpt(POLICY_PORTS.policy, sender, recipient, LISTED_CLIENT);
        const plainProbe = await probeRcpt(POLICY_PORTS.plain, otherSender, recipient);
        outcome.checks.push(`a new triplet (<${otherSender}>) got "${greylisted}"`, `client ${LISTED_CLIENT} got "${listed}"`, `the plain server answered the new triplet "${plainProbe}"`);
        if (!greylisted.startsWith('451')) outcome.problems.push(`greylisting: a new triplet was not temp-failed (${greylisted})`);
        if (!listed.startsWith('554')) outcome.problems.push(`DNS lists: a listed client was not refused (${listed})`);
        if (!plainProbe.startsWith('250')) outcome.problems.push(`the plain server refused a recipient (${plainProbe})`);

        const runsOf: Record<Variant, RunResult[]> = { plain: [], policy: [] };
        let policyQueries = 0;
        let policyDnsCpu = 0;
        let policyMessages = 0;
        for (let i = 0; i < opts.runs; i++) {
          // Alternate which goes first, so neither always follows the other's leftovers.
          const order: Variant[] = i % 2 === 0 ? ['plain', 'policy'] : ['policy', 'plain'];
          for (const variant of order) {
            const server = variant === 'plain' ? plain : policy;
            const quiet = await waitForQuiet(opts.quietWaitMs);
            if (!quiet.quiet) log(`   the machine is busy with other work; measuring anyway after ${(quiet.waitedMs / 1000).toFixed(0)} s`);
            const queriesBefore = dns.queryCount();
            const dnsCpuBefore = dnsCpu();
            const startedAt = performance.now();
            const gone = server.failure();
            const result: RunResult = gone === undefined ? await runLoad(opts.smtpSource, POLICY_PORTS[variant], cell, server.rootPid, opts.invocationTimeoutMs) : { ok: false, error: gone };
            const wallSeconds = (performance.now() - startedAt) / 1000;
            const dnsSeconds = dnsCpu() - dnsCpuBefore;
            const queries = dns.queryCount() - queriesBefore;
            runsOf[variant].push(result);
            if (result.ok) {
              // dnsmasq is part of the scenario, not other work on the machine.
              otherCores.push(Math.max(0, result.otherCores - dnsSeconds / wallSeconds));
              if (variant === 'policy') {
                policyQueries += queries;
                policyDnsCpu += dnsSeconds;
                policyMessages += result.messages;
              } else if (queries > 0) {
                outcome.problems.push(`the plain server's run saw ${queries} DNS queries`);
              }
            }
            log(
              `   ${variant.padEnd(6)} ${cellLabel(cell)} run ${i + 1}: ${
                result.ok
                  ? `${Math.round(result.messages / result.seconds)} msg/s, ${result.cpuSeconds.toFixed(2)} s CPU, ${queries} DNS queries, other load ${result.otherCores.toFixed(2)} cores`
                  : `FAILED: ${result.error}`
              }`,
            );
          }
          if (runsOf.plain.some((r) => !r.ok) || runsOf.policy.some((r) => !r.ok)) break;
        }
        outcome.plain = summarize(runsOf.plain);
        outcome.policy = summarize(runsOf.policy);
        if (policyMessages > 0) {
          outcome.dnsQueriesPerMessage = policyQueries / policyMessages;
          outcome.dnsCpuPer1000 = dnsPid === undefined ? undefined : (policyDnsCpu / policyMessages) * 1000;
          outcome.checks.push(`it sent dnsmasq ${warmUpQueries} DNS queries during the warm-up and ${policyQueries} during the ${policyMessages} measured messages`);
        }
        await stopServers();

        const stored = await countSpfPass(policy.spoolDir);
        const plainStored = await countSpfPass(plain.spoolDir);
        outcome.checks.push(
          `${stored.spfPass} of the ${stored.messages} messages in its spool carry \`Received-SPF: pass\`${stored.sample === undefined ? '' : ` (e.g. \`${stored.sample.slice(0, 120)}\`)`}`,
          `${plainStored.withField} of the plain server's ${plainStored.messages} carry a Received-SPF field`,
        );
        if (stored.messages === 0 || stored.spfPass !== stored.messages) {
          outcome.problems.push(`SPF: ${stored.spfPass} of ${stored.messages} stored messages carry Received-SPF: pass (is the SPF check wired?)`);
        }
        if (policyMessages > 0 && warmUpQueries + policyQueries === 0) outcome.problems.push('no DNS query from the load reached dnsmasq');
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        log(`   failed: ${reason}`);
        if (outcome.plain.ok === false && 'notRun' in outcome.plain) outcome.plain = { ok: false, error: reason };
        if (outcome.policy.ok === false && 'notRun' in outcome.policy) outcome.policy = { ok: false, error: reason };
        outcome.problems.push(reason);
      } finally {
        await stopServers();
        opts.cleanups.delete(stopServers);
        if (!opts.debug) rmSync(cellDir, { recursive: true, force: true });
      }
    }
  } finally {
    await dns.stop();
    opts.cleanups.delete(stopDns);
  }
  return {
    versions: [portcullisVersion, `dnsmasq ${dnsmasqVersion()} (the DNS server the policy checks ask, on loopback)`],
    otherCores,
    markdown: renderPolicy(outcomes, opts.runs),
  };
}
