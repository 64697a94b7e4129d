#!/usr/bin/env node
// Entry point of the `portcullis` command (and of `npm start`, and of every worker process the
// server forks: cluster runs this same file). Plain JavaScript on purpose: it runs before any
// TypeScript is loaded, so it can turn on Node's compile cache first.
//
// The compile cache keeps the type-stripped, compiled form of every module on disk, so a process
// that finds it warm never loads the type stripper and compiles less: measured on an idle server
// (one primary, two workers), 105 -> 72 MiB RSS per process. It lives in a directory private to
// the user running the server ($XDG_CACHE_HOME/portcullis/compile, else ~/.cache/...), never in
// the shared temporary directory: whoever can write there could plant code for us to run.
// PORTCULLIS_COMPILE_CACHE=DIR puts it elsewhere, =off turns it off (as NODE_DISABLE_COMPILE_CACHE=1 does).
import { mkdirSync, statSync } from 'node:fs';
import module from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';

const [major] = process.versions.node.split('.').map(Number);
if (major < 24 || !process.features.typescript) {
  process.stderr.write(`portcullis: needs Node.js 24 or newer with type stripping (this is ${process.version}); run it through npm (npm start) or npx, which use the Node 24 from devDependencies\n`);
  process.exit(2);
}

function compileCacheDir() {
  const chosen = process.env.PORTCULLIS_COMPILE_CACHE;
  if (chosen === 'off') return null;
  if (chosen !== undefined && chosen !== '') return chosen;
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'portcullis', 'compile');
}

const dir = compileCacheDir();
if (dir !== null) {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = statSync(dir);
    // Security: only a directory that is ours alone; anything else, no cache (and say why once).
    if (!st.isDirectory() || (typeof process.getuid === 'function' && st.uid !== process.getuid()) || (st.mode & 0o022) !== 0) {
      if (process.env.NODE_UNIQUE_ID === undefined) process.stderr.write(`portcullis: compile cache ${dir} is not a directory only we can write; running without it\n`);
    } else module.enableCompileCache(dir);
  } catch {
    // No home, read-only file system: the cache is an optimisation, never a reason not to start.
  }
}
await import('../src/cli/main.ts');
