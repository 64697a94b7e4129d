// A CPU profile of the policy scenario (policy.ts): the plain and the policy server side by side,
// each started with `--cpu-prof` (the supervisor passes its Node options on to every worker and
// the SPF thread inherits them), the same load alternated, then the self time of every function
// summed over each server's processes and threads and printed as "policy minus plain". Not part of
// `npm run bench`: it answers "where does the policy's per-message time go", not "how fast".
// Owns its scratch directory and the processes it started (stopped by their PIDs).
//
//   node bench/policy-profile.ts [--cell 1|d] [--runs 2] [--top 25] [--keep DIR]

import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import { runLoad, smtpSourceArgs } from './load.ts';
import { POLICY_PORTS, policyCells, policyToml, preAllowTriplet } from './policy.ts';
import { startPortcullis, type RunningPortcullis } from './portcullis.ts';
import { findExecutable, HOST, waitForFreePort } from './util.ts';

const { values } = parseArgs({
  options: {
    cell: { type: 'string', default: '1' },
    runs: { type: 'string', default: '2' },
    top: { type: 'string', default: '25' },
    keep: { type: 'string' },
  },
});
const smtpSource = findExecutable('smtp-source');
if (smtpSource === undefined) throw new Error('smtp-source not found (postfix package)');
const repoDir = join(import.meta.dirname, '..');
const cell = policyCells(false)[values.cell === 'd' ? 1 : 0];
const args = smtpSourceArgs(cell, 0);
const sender = args[args.indexOf('-f') + 1];
const recipient = args[args.indexOf('-t') + 1];
const senderDomain = sender.slice(sender.lastIndexOf('@') + 1);
const scratch = values.keep ?? mkdtempSync(join(tmpdir(), 'portcullis-bench-prof-'));
chmodSync(scratch, 0o755);

const dns = await startDnsServer({
  zones: ['bench-dns.test', senderDomain],
  records: [`txt-record=${senderDomain},"v=spf1 ip4:127.0.0.0/8 -all"`],
});
const servers: Partial<Record<'plain' | 'policy', RunningPortcullis>> = {};
try {
  for (const variant of ['plain', 'policy'] as const) {
    const port = POLICY_PORTS[variant];
    if (!(await waitForFreePort(port, 10_000))) throw new Error(`port ${port} is already in use`);
    const dir = join(scratch, variant);
    mkdirSync(join(dir, 'prof'), { recursive: true });
    servers[variant] = await startPortcullis({
      port,
      scratchDir: dir,
      repoDir,
      debug: false,
      log: () => undefined,
      relayNetworks: [],
      portcullisNodeArgs: ['--cpu-prof', `--cpu-prof-dir=${join(dir, 'prof')}`],
      ...(variant === 'policy' ? { extraToml: policyToml(dns.server), beforeStart: ({ spoolDir }) => preAllowTriplet(spoolDir, HOST, sender, recipient) } : {}),
    });
  }
  for (const variant of ['plain', 'policy'] as const) {
    await runLoad(smtpSource, POLICY_PORTS[variant], { ...cell, batch: 400, batches: 1 }, servers[variant]!.rootPid, 60_000);
  }
  for (let i = 0; i < Number(values.runs); i++) {
    for (const variant of i % 2 === 0 ? (['plain', 'policy'] as const) : (['policy', 'plain'] as const)) {
      const r = await runLoad(smtpSource, POLICY_PORTS[variant], cell, servers[variant]!.rootPid, 120_000);
      if (!r.ok) throw new Error(`${variant}: ${r.error}`);
      process.stdout.write(`${variant} run ${i + 1}: ${Math.round(r.messages / r.seconds)} msg/s, ${((r.cpuSeconds / r.messages) * 1e6).toFixed(0)} µs CPU/msg, other work ${r.otherCores.toFixed(2)} cores\n`);
    }
  }
} finally {
  // SIGTERM: a graceful stop, so every worker exits and writes its profile.
  await Promise.all(Object.values(servers).map((s) => s.stop()));
  await dns.stop();
}

type Node = { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] };
type Profile = { nodes: Node[]; samples: number[]; timeDeltas: number[] };

/** Self time (ms) per "function file:line" over every profile in a directory, idle and GC kept apart. */
function selfTimes(dir: string): { byFunction: Map<string, number>; busyMs: number; files: number } {
  const byFunction = new Map<string, number>();
  let busyMs = 0;
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  for (const file of files) {
    const p = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile;
    const label = new Map<number, string>();
    for (const n of p.nodes) {
      const url = n.callFrame.url.replace(/^file:\/\/.*?\/(src|node_modules|bench)\//, '$1/');
      label.set(n.id, `${n.callFrame.functionName || '(anonymous)'} ${url === '' ? '' : `${url}:${n.callFrame.lineNumber + 1}`}`.trim());
    }
    for (let i = 0; i < p.samples.length; i++) {
      const name = label.get(p.samples[i]) ?? '?';
      const ms = (p.timeDeltas[i] ?? 0) / 1000;
      if (name !== '(idle)' && name !== '(program)') busyMs += ms;
      byFunction.set(name, (byFunction.get(name) ?? 0) + ms);
    }
  }
  return { byFunction, busyMs, files: files.length };
}

const plain = selfTimes(join(scratch, 'plain', 'prof'));
const policy = selfTimes(join(scratch, 'policy', 'prof'));
process.stdout.write(`\nbusy (not idle, not "program"): plain ${plain.busyMs.toFixed(0)} ms in ${plain.files} profiles, policy ${policy.busyMs.toFixed(0)} ms in ${policy.files}\n`);
const names = new Set([...plain.byFunction.keys(), ...policy.byFunction.keys()]);
const rows = [...names].map((name) => ({ name, plain: plain.byFunction.get(name) ?? 0, policy: policy.byFunction.get(name) ?? 0 }));
rows.sort((a, b) => b.policy - b.plain - (a.policy - a.plain));
process.stdout.write('\nself time, policy minus plain (ms): the largest differences\n');
for (const r of rows.slice(0, Number(values.top))) process.stdout.write(`${(r.policy - r.plain).toFixed(0).padStart(7)}  ${r.policy.toFixed(0).padStart(7)}  ${r.plain.toFixed(0).padStart(7)}  ${r.name}\n`);
process.stdout.write('\nself time in the policy server, src/policy and src/server (ms)\n');
const ours = rows.filter((r) => /src\/(policy|server)\//.test(r.name)).sort((a, b) => b.policy - a.policy);
for (const r of ours.slice(0, Number(values.top))) process.stdout.write(`${r.policy.toFixed(0).padStart(7)}  ${r.name}\n`);
if (values.keep === undefined) rmSync(scratch, { recursive: true, force: true });
