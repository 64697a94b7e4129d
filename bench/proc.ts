// Reads a server's process tree from /proc: CPU time (children included) and memory (PSS).
// Linux only. Never signals or changes a process; a process that vanishes mid-read is skipped.
// proc(5): /proc/PID/stat fields 14-17 are utime, stime, cutime, cstime in clock ticks.

import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const TICKS_PER_SECOND = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

type Stat = { pid: number; ppid: number; state: string; cpuTicks: number };

function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const ticks = (i: number) => Number(fields[i]);
  // fields[0] is field 3 (state), so field N is fields[N - 3].
  return { pid, ppid: ticks(1), state: fields[0], cpuTicks: ticks(11) + ticks(12) + ticks(13) + ticks(14) };
}

export type TreeSample = { pids: number[]; cpuSeconds: number };

/** The root and all its descendants, with their summed CPU time (own + reaped children). */
export function sampleTree(rootPid: number): TreeSample {
  const stats = new Map<number, Stat>();
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const stat = readStat(pid);
    if (stat === undefined) continue;
    stats.set(pid, stat);
    const siblings = children.get(stat.ppid);
    if (siblings === undefined) children.set(stat.ppid, [pid]);
    else siblings.push(pid);
  }
  const pids: number[] = [];
  let ticks = 0;
  const queue = stats.has(rootPid) ? [rootPid] : [];
  while (queue.length > 0) {
    const pid = queue.pop() as number;
    pids.push(pid);
    ticks += (stats.get(pid) as Stat).cpuTicks;
    queue.push(...(children.get(pid) ?? []));
  }
  return { pids, cpuSeconds: ticks / TICKS_PER_SECOND };
}

/** Proportional set size of the processes, in KiB (shared pages split between sharers). */
export function pssKiB(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const match = /^Pss:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1'));
      if (match !== null) total += Number(match[1]);
    } catch {
      // exited between the tree scan and this read
    }
  }
  return total;
}

/** Resident set size of the processes, in KiB (each process counted whole, as `ps` shows it). */
export function rssKiB(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
      if (match !== null) total += Number(match[1]);
    } catch {
      // exited between the tree scan and this read
    }
  }
  return total;
}

/** True while the process exists and is not a zombie. */
export function isRunning(pid: number): boolean {
  const stat = readStat(pid);
  return stat !== undefined && stat.state !== 'Z' && stat.state !== 'X';
}

/**
 * CPU time the whole machine spent busy in processes, plus time the hypervisor took away (steal),
 * from /proc/stat. Interrupt time is left out: the loopback traffic the benchmark makes is handled
 * there, and it is nobody else's work.
 */
export function machineBusySeconds(): number {
  const fields = readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already inside user)
  const [user, nice, system, , , , , steal] = fields;
  return (user + nice + system + steal) / TICKS_PER_SECOND;
}

/** CPU time of this process and its reaped children (the smtp-source runs it waited for). */
export function selfCpuSeconds(): number {
  return (readStat(process.pid) as Stat).cpuTicks / TICKS_PER_SECOND;
}
