// SIGTERM or SIGINT to the start commands docs/operations.md shows (`npm start`, the server run
// by node itself) stops the whole server: no process of the tree survives and the port is free.
// npm runs the script through a shell (`exec` makes node the process npm signals). `npx node …
// serve` runs `sh -c node …` and SIGTERM ends only npx and that shell: the primary notices it has
// lost its parent and stops as on SIGTERM. Real processes; only the PIDs this test started are
// touched.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCliServer, type Launcher } from '../helpers/cli-server.ts';

/** Primary grace for sessions (10 s) is not needed here: no session is open. */
const TREE_GONE_WITHIN_MS = 15_000;

/** Live (non-zombie) processes whose parent is `pid`, recursively, from /proc. */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (state === 'Z') continue;
      const list = children.get(Number(ppid)) ?? [];
      list.push(Number(name));
      children.set(Number(ppid), list);
    } catch {
      // exited while we read
    }
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

async function assertStopsWholeTree(launcher: Launcher, signal: NodeJS.Signals): Promise<void> {
  const server = await startCliServer({ workers: 2, launcher });
  const tree = [server.pid, ...descendants(server.pid)];
  try {
    // The primary and two workers, under npm (and, for npx, its shell).
    assert.ok(tree.length >= (launcher === 'node' ? 3 : 4), `the tree: ${tree.join(' ')}`);
    process.kill(server.pid, signal);
    const deadline = Date.now() + TREE_GONE_WITHIN_MS;
    while (tree.some(isAlive) && Date.now() < deadline) await sleep(50);
    assert.deepEqual(tree.filter(isAlive), [], `${launcher} + ${signal}: every process of the tree has exited`);
    assert.ok(await isPortFree(server.port), 'the port is free');
    const log = server.logText();
    assert.match(log, /"msg":"stopping workers"/);
    assert.match(log, /"msg":"all workers stopped"/);
  } finally {
    for (const pid of tree.filter(isAlive)) process.kill(pid, 'SIGKILL'); // ours, left over by a failure
    await server.cleanup();
  }
}

test('SIGTERM to `npm start` stops the primary and its workers', () => assertStopsWholeTree('npm-start', 'SIGTERM'));
test('SIGINT to `npm start` stops the primary and its workers', () => assertStopsWholeTree('npm-start', 'SIGINT'));
test('SIGTERM to `npx node src/cli/main.ts serve` stops the primary and its workers', () => assertStopsWholeTree('npx', 'SIGTERM'));
test('SIGINT to the server run by node itself stops the primary and its workers', () => assertStopsWholeTree('node', 'SIGINT'));
