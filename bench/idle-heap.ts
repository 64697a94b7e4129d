// Bytes of the server's heap per idle connection (issue 11), measured inside one process so a
// single change to src/server/connection.ts shows up: bench:defense measures the whole server from
// outside (PSS), where when the workers' heaps were last collected moves the figure by more than
// most single changes. An in-process server (test/helpers/server.ts, one worker, silent log) is
// started, the heap is collected and measured, a child process opens N idle connections and
// waits for every greeting, the heap is collected and measured again; the difference over N is
// the figure (V8 heap used, and external plus array buffers: the sockets' native parts only
// partly show there; the committed heap and the RSS growth are printed beside it). Loopback is
// on the default allow list, so no per-address limit applies.
//
//   npx node --expose-gc bench/idle-heap.ts [--connections 3000] [--runs 3]

import { fork } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { startTestServer } from '../test/helpers/server.ts';

const { values } = parseArgs({ options: { connections: { type: 'string', default: '3000' }, runs: { type: 'string', default: '3' }, child: { type: 'string' } } });
const N = Number(values.connections);

if (values.child !== undefined) {
  // The client side: N connections held open until the parent says so (or disconnects).
  const net = await import('node:net');
  const port = Number(values.child);
  const sockets: import('node:net').Socket[] = [];
  let greeted = 0;
  for (let i = 0; i < N; i += 250) {
    await Promise.all(
      Array.from({ length: Math.min(250, N - i) }, () =>
        new Promise<void>((resolve) => {
          const s = net.connect({ port, host: '127.0.0.1' });
          sockets.push(s);
          const timer = setTimeout(resolve, 10_000);
          s.once('data', () => {
            greeted++;
            clearTimeout(timer);
            resolve();
          });
          s.on('error', () => resolve());
        }),
      ),
    );
  }
  process.send?.({ greeted });
  process.once('disconnect', () => {
    for (const s of sockets) s.destroy();
    process.exit(0);
  });
} else {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error('run with --expose-gc');
  const collect = async (): Promise<NodeJS.MemoryUsage> => {
    for (let i = 0; i < 3; i++) {
      gc();
      await sleep(50);
    }
    return process.memoryUsage();
  };
  const server = await startTestServer();
  try {
    for (let run = 0; run < Number(values.runs); run++) {
      const before = await collect();
      const child = fork(import.meta.filename, ['--child', String(server.port), '--connections', String(N)], { stdio: 'inherit' });
      const greeted = await new Promise<number>((resolve, reject) => {
        child.once('message', (m) => resolve((m as { greeted: number }).greeted));
        child.once('exit', () => reject(new Error('client process exited')));
      });
      await sleep(500);
      const held = server.connectionCount();
      const after = await collect();
      const heap = (after.heapUsed - before.heapUsed) / held;
      const ext = (after.external + after.arrayBuffers - before.external - before.arrayBuffers) / held;
      // Committed heap and RSS: what the heap holds beyond its live objects (pages not returned,
      // the young generation grown by the burst) and native memory (libuv handles, malloc).
      const committed = (after.heapTotal - before.heapTotal) / held;
      const rss = (after.rss - before.rss) / held;
      process.stdout.write(
        `run ${run + 1}: ${held} held (${greeted} greeted): heap ${heap.toFixed(0)} B + external ${ext.toFixed(0)} B per idle connection; heap committed ${committed.toFixed(0)} B, RSS ${rss.toFixed(0)} B\n`,
      );
      child.disconnect();
      for (let i = 0; i < 200 && server.connectionCount() > 0; i++) await sleep(50);
    }
  } finally {
    await server.stop();
  }
}
