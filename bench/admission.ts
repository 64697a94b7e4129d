// `npm run -s bench:admission`: what admission (server/admission.ts) costs per connection, CPU only,
// in one process: Admission.admit() and the release at the connection's end, for a client that is
// counted (no allow list, limits high enough that none refuses) and for one on the allow list, from
// one address and from many. The end-to-end A/B is `npm run -s bench -- --only portcullis
// [--admission]`, whose run-to-run noise on a shared machine (10-15 %) is far above this cost;
// this loop shows the cost itself, to set beside the server's CPU per message in that benchmark.
// The cross-worker path (a worker past its local share asks the primary over IPC) is not in it.

import { pino } from 'pino';
import { accessLists } from '../src/defense/access.ts';
import { Admission, type AdmissionLimits } from '../src/server/admission.ts';

const HIGH: AdmissionLimits = {
  maxConnections: 1_000_000,
  maxConnectionsPerIp: 1_000_000,
  maxConnectionsPerNetwork: 1_000_000,
  connectionRatePerIp: { count: 1_000_000_000, windowSeconds: 60 },
};
const CALLS = 200_000;
const REPEATS = 5;

function admission(allow: string[]): Admission {
  return new Admission({ access: accessLists(allow, []), limits: HIGH, prefixes: { ipv4: 24, ipv6: 64 }, log: pino({ level: 'silent' }) });
}

/** Median microseconds per admit + release over REPEATS loops of CALLS connections. */
function measure(a: Admission, addressOf: (i: number) => string): number {
  const runs: number[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const started = process.hrtime.bigint();
    for (let i = 0; i < CALLS; i++) {
      const decision = a.admit(addressOf(i), Date.now());
      if (decision instanceof Promise || decision.kind !== 'allow') throw new Error('admission refused or deferred in the loop');
      decision.release();
    }
    runs.push(Number(process.hrtime.bigint() - started) / CALLS / 1000);
  }
  return runs.sort((x, y) => x - y)[Math.floor(REPEATS / 2)];
}

const one = (): string => '192.0.2.1';
const many = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
const rows = [
  ['counted, one address', measure(admission([]), one)],
  ['counted, many addresses', measure(admission([]), many)],
  ['allow-listed, one address', measure(admission(['192.0.2.0/24', '10.0.0.0/8']), one)],
  ['allow-listed, many addresses', measure(admission(['192.0.2.0/24', '10.0.0.0/8']), many)],
] as const;
process.stdout.write(`\nAdmission cost per connection (median of ${REPEATS} loops of ${CALLS.toLocaleString('en')}; Node ${process.versions.node})\n\n| client | µs per admit + release |\n| --- | --: |\n`);
for (const [name, us] of rows) process.stdout.write(`| ${name} | ${us.toFixed(2)} |\n`);
