// Starts Haraka 3 as a benchmark peer: installed from npm into .bench/haraka (gitignored, never a
// project dependency), run under the benchmark's own Node binary with one cluster worker per core
// (the counterpart of Portcullis's workers = "auto"), accepting bench.test and discarding through
// queue/discard, which keeps nothing on disk.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunningServer, StartOptions } from './servers.ts';
import { HOST, runCommand, spawnLogged, stopTree, waitForBanner } from './util.ts';

const HARAKA_RANGE = 'Haraka@3';

function installedVersion(installDir: string): string | undefined {
  const manifest = join(installDir, 'node_modules/Haraka/package.json');
  if (!existsSync(manifest)) return undefined;
  const { version } = JSON.parse(readFileSync(manifest, 'utf8')) as { version: string };
  return version.startsWith('3.') ? version : undefined;
}

/** Installs Haraka once; later runs reuse the install. */
async function ensureHaraka(repoDir: string, log: (line: string) => void): Promise<{ installDir: string; version: string }> {
  const installDir = join(repoDir, '.bench/haraka');
  let version = installedVersion(installDir);
  if (version !== undefined) return { installDir, version };
  log(`installing ${HARAKA_RANGE} into .bench/haraka (once) ...`);
  mkdirSync(installDir, { recursive: true });
  writeFileSync(join(installDir, 'package.json'), '{ "private": true }\n');
  // Run npm under this Node when npm started us (Haraka's engines want a newer Node than npm's own);
  // no install scripts: the only one is an optional native syslog binding.
  const npmCli = process.env.npm_execpath;
  const [file, prefix] = npmCli?.endsWith('.js') ? [process.execPath, [npmCli]] : ['npm', []];
  const args = [...prefix, 'install', '--no-audit', '--no-fund', '--omit=optional', '--ignore-scripts', HARAKA_RANGE];
  const result = await runCommand(file, args, { timeoutMs: 300_000, cwd: installDir });
  version = installedVersion(installDir);
  if (result.code !== 0 || version === undefined) {
    throw new Error(`npm install ${HARAKA_RANGE} failed: ${result.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  }
  return { installDir, version };
}

export async function startHaraka(options: StartOptions): Promise<RunningServer> {
  const { installDir, version } = await ensureHaraka(options.repoDir, options.log);
  const bin = join(installDir, 'node_modules/Haraka/bin/haraka');
  const dir = join(options.scratchDir, 'haraka');
  const init = await runCommand(process.execPath, [bin, '-i', dir], { timeoutMs: 60_000 });
  if (init.code !== 0) throw new Error(`haraka -i failed: ${init.stderr.trim()}`);
  const config = (name: string, text: string) => writeFileSync(join(dir, 'config', name), text);
  config('plugins', 'rcpt_to.in_host_list\nqueue/discard\n');
  config('host_list', 'bench.test\n');
  config('me', 'bench.local\n');
  config('smtp.ini', `listen=${HOST}:${options.port}\nnodes=cpus\n`);
  config('log.ini', '[main]\nlevel=warn\n');

  const logPath = join(options.scratchDir, 'haraka.log');
  const server = spawnLogged(process.execPath, [...(options.harakaNodeArgs ?? []), bin, '-c', dir], {
    cwd: installDir,
    env: { ...process.env, YES_REALLY_DO_DISCARD: '1' },
    logPath,
  });
  try {
    await waitForBanner(options.port, 60_000, server.exitReason);
  } catch (error) {
    await stopTree(server.pid);
    throw error;
  }
  return {
    rootPid: server.pid,
    version: `${version} (Node ${process.versions.node}, nodes=cpus)`,
    failure: server.exitReason,
    stop: () => stopTree(server.pid),
    logPath,
  };
}
