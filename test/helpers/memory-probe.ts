// Looks at a running server from outside, as an operator would: its resident memory summed over
// its processes (/proc/PID/status), and how many octets each of its TCP sockets has not read yet
// (/proc/net/tcp, the Recv-Q that `ss` shows), so a test can tell a server that stopped reading
// from one that read everything and holds it; and a legitimate client's whole transaction, to
// show the server still serves while it is attacked. Reads /proc only; never signals anything.

import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { readMessage } from '../../src/spool/reader.ts';
import type { CliServer } from './cli-server.ts';
import { SmtpClient } from './smtp-client.ts';

/** The server's processes: the primary and, with smtp.workers > 1, its workers. */
export function serverPids(server: CliServer): number[] {
  return [server.pid, ...server.workerPids()];
}

/** Resident set size summed over `pids`, in KiB (a process that has gone counts 0). */
export function rssKiB(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
      if (m !== null) total += Number(m[1]);
    } catch {
      // gone
    }
  }
  return total;
}

/** One established TCP socket on 127.0.0.1 whose local port is `port`: the peer's port, the
 *  octets received that the owning process has not read, and the octets it wrote that the peer
 *  has not acknowledged (the kernel's send queue). */
export type ServerSocket = { remotePort: number; unreadBytes: number; unsentBytes: number };

/** The established IPv4 sockets with local port `port` (the server's side of every session). */
export function serverSockets(port: number): ServerSocket[] {
  const out: ServerSocket[] = [];
  const lines = readFileSync('/proc/net/tcp', 'latin1').split('\n');
  for (let i = 1; i < lines.length; i++) {
    const f = lines[i].trim().split(/\s+/);
    if (f.length < 5 || f[3] !== '01') continue; // 01: ESTABLISHED
    if (Number.parseInt(f[1].split(':')[1], 16) !== port) continue;
    const [tx, rx] = f[4].split(':').map((h) => Number.parseInt(h, 16));
    out.push({ remotePort: Number.parseInt(f[2].split(':')[1], 16), unreadBytes: rx, unsentBytes: tx });
  }
  return out;
}

/** Polls `isDone` every 50 ms for at most `ms`; returns whether it became true. */
export async function until(isDone: () => boolean | Promise<boolean>, ms = 20_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await isDone()) return true;
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
}

/** The largest of `samples` RSS readings taken `everyMs` apart: a peak, not one lucky moment. */
export async function peakRssKiB(pids: number[], samples = 5, everyMs = 100): Promise<number> {
  let peak = 0;
  for (let i = 0; i < samples; i++) {
    peak = Math.max(peak, rssKiB(pids));
    if (i < samples - 1) await sleep(everyMs);
  }
  return peak;
}

/** EHLO .. QUIT with one small message; resolves with its queue id once the message is read back
 *  from the spool (throws on any other reply, or when the stored message is not the one sent). */
export async function legitimateTransaction(server: CliServer, mark: string): Promise<string> {
  const c = await SmtpClient.connect(server.port);
  try {
    await c.expect('', 220, 'greeting');
    await c.expect('EHLO legit.example\r\n', 250);
    await c.expect('MAIL FROM:<legit@legit.example>\r\n', 250);
    await c.expect('RCPT TO:<alice@example.test>\r\n', 250);
    await c.expect('DATA\r\n', 354);
    const body = `Subject: ${mark}\r\n\r\nA legitimate message (${mark}).\r\n`;
    const queued = await c.expect(`${body}.\r\n`, 250, 'end of data');
    const id = /queued as (\S+)/.exec(queued.text)?.[1];
    if (id === undefined) throw new Error(`no queue id in ${queued.text}`);
    await c.expect('QUIT\r\n', 221);
    const stored = await readMessage(server.spoolDir, id);
    if (stored === null || !stored.content.toString('latin1').endsWith(body)) throw new Error(`message ${id} is not in the spool as sent`);
    return id;
  } finally {
    c.close();
  }
}
