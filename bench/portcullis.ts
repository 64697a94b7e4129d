// Starts Portcullis for the benchmark: `serve` with a TOML config in the scratch dir, under the same
// Node binary the benchmark runs on. Durable like Postfix: the spool answers 250 after fsync.
// The policy scenario (policy.ts) adds TOML sections, narrows relay.networks and seeds the state
// store before the server starts.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunningServer, StartOptions } from './servers.ts';
import { HOST, spawnLogged, stopTree, waitForBanner } from './util.ts';

export type PortcullisOptions = StartOptions & {
  /** relay.networks; default ["127.0.0.0/8"] (the load's client may relay). */
  relayNetworks?: readonly string[];
  /** The [routes] table as TOML lines; default: everything to discard (as the Postfix peer). */
  routes?: readonly string[];
  /** Appended to the configuration (whole TOML sections). */
  extraToml?: string;
  /** [log] level; default "warn" (logging costs throughput). */
  logLevel?: string;
  /** Called with the spool directory (not yet created) after the config is written, before the server starts. */
  beforeStart?: (paths: { spoolDir: string; configPath: string }) => Promise<void>;
};

export type RunningPortcullis = RunningServer & { spoolDir: string; configPath: string; logPath: string };

export async function startPortcullis(options: PortcullisOptions): Promise<RunningPortcullis> {
  // The command's entry (bin/portcullis.js: the compile cache on, as for an operator).
  const main = join(options.repoDir, 'bin/portcullis.js');
  if (!existsSync(main)) throw new Error('bin/portcullis.js does not exist');
  const dir = join(options.scratchDir, 'portcullis');
  mkdirSync(dir);
  const configPath = join(dir, 'portcullis.toml');
  const spoolDir = join(dir, 'spool');
  const relayNetworks = options.relayNetworks ?? ['127.0.0.0/8'];
  // JSON string escapes are valid TOML basic-string escapes.
  writeFileSync(
    configPath,
    `[smtp]
listen = ["${HOST}:${options.port}"]
hostname = "bench.local"
workers = "auto"
[domains]
local = ["bench.test"]
[relay]
networks = ${JSON.stringify(relayNetworks)}
[routes]
${(options.routes ?? ['# As the Postfix peer\'s discard: transport: queued durably, then thrown away.', 'local = "discard"', 'default = "discard"']).join('\n')}
[spool]
dir = ${JSON.stringify(spoolDir)}
[log]
level = "${options.logLevel ?? 'warn'}"
${options.extraToml ?? ''}
${options.portcullisToml ?? ''}`,
  );
  await options.beforeStart?.({ spoolDir, configPath });
  const server = spawnLogged(process.execPath, [...(options.portcullisNodeArgs ?? []), main, 'serve', '--config', configPath], {
    cwd: options.repoDir,
    logPath: join(dir, 'portcullis.log'),
  });
  try {
    await waitForBanner(options.port, 30_000, server.exitReason);
  } catch (error) {
    await stopTree(server.pid);
    throw error;
  }
  const { version } = JSON.parse(readFileSync(join(options.repoDir, 'package.json'), 'utf8')) as { version: string };
  return {
    logPath: join(dir, 'portcullis.log'),
    rootPid: server.pid,
    version: `${version} (Node ${process.versions.node}, workers = "auto")`,
    failure: server.exitReason,
    stop: () => stopTree(server.pid),
    spoolDir,
    configPath,
  };
}
