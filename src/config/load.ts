// The configuration loader: TOML text -> validated Config, with every problem reported at once.
// Assembles the key tables (the core sections' in keys/, each policy check's from the registry)
// into CONFIG_KEYS, the one source for keys, defaults, limits and their docs; the validators are
// in validators.ts and values.ts, suggestions in suggest.ts, two-key checks in cross-checks.ts.
// Never starts anything or touches the network; it reads only the file it is given.

import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { parseBlockFile } from '../defense/access.ts';
import { CHECK_CONFIGS } from '../policy/registry.ts';
import { crossProblems } from './cross-checks.ts';
import type { ConfigKey, ConfigTables, ListKey } from './keys.ts';
import { ADMISSION_KEYS } from './keys/admission.ts';
import { LISTENER_TABLES } from './keys/listeners.ts';
import { PREGREET_KEYS } from './keys/pregreet.ts';
import { OPS_KEYS } from './keys/ops.ts';
import { POLICY_KEYS } from './keys/policy.ts';
import { parseAliases, parseRoutes, resolveRoutePaths, ROUTES_KEYS } from './keys/routes.ts';
import { PROXY_KEYS } from './keys/proxy.ts';
import { SESSION_LIMITS_KEYS } from './keys/session-limits.ts';
import { SMTP_KEYS } from './keys/smtp.ts';
import { QUEUE_KEYS } from './keys/queue.ts';
import { SPOOL_KEYS } from './keys/spool.ts';
import { unknownKey, unknownSection } from './suggest.ts';
import { defaultConfig } from './types.ts';
import type { Config } from './types.ts';
import { bytesText, isTable, show } from './validators.ts';

export type { ConfigKey, ListKey } from './keys.ts';
export { MAX_DNS_WAIT_MS } from './cross-checks.ts';

/** Thrown for any invalid configuration; `problems` holds one line per problem, in file order. */
export class ConfigError extends Error {
  readonly code = 'PORTCULLIS_CONFIG';
  readonly problems: string[];
  /** The file name (or other label) the text came from. */
  readonly source: string;

  constructor(source: string, problems: string[]) {
    const summary =
      problems.length === 1 ? problems[0] : `${problems.length} problems:\n  ${problems.join('\n  ')}`;
    super(`${source}: ${summary}`);
    this.name = 'ConfigError';
    this.source = source;
    this.problems = problems;
  }
}

// ---------------------------------------------------------------------------------------------
// The key tables.

/** Every key: the core sections', then each registered check's, in the registry's order. */
export const CONFIG_KEYS: readonly ConfigKey[] = [
  ...SMTP_KEYS,
  ...PROXY_KEYS,
  ...ADMISSION_KEYS,
  ...PREGREET_KEYS,
  ...SESSION_LIMITS_KEYS,
  ...SPOOL_KEYS,
  ...QUEUE_KEYS,
  ...POLICY_KEYS,
  ...OPS_KEYS,
  ...ROUTES_KEYS,
  ...CHECK_CONFIGS.flatMap((check) => check.keys),
];

const KEYS_BY_PATH = new Map(CONFIG_KEYS.map((k) => [k.path, k]));

/** The arrays of tables the checks read (`[[dnsbl]]`), by name. */
const TABLES = new Map<string, ConfigTables>([
  [LISTENER_TABLES.name, LISTENER_TABLES],
  ...CHECK_CONFIGS.flatMap((check): [string, ConfigTables][] => ('tables' in check ? [[check.tables.name, check.tables]] : [])),
]);

/** Sections whose keys the operator names (domains, addresses): each read whole by its own parser. */
const NAMED_KEY_SECTIONS = new Map<string, (value: unknown, problems: string[]) => unknown>([
  ['routes', parseRoutes],
  ['aliases', parseAliases],
]);

/** The keys of every array of tables (`[[dnsbl]]`: the DNS-list check's, from its directory). */
export const TABLE_KEYS: readonly ListKey[] = [...TABLES.values()].flatMap((tables) => tables.keys);

/** Every section a key lives in, in the order the tables list them. */
const SECTIONS: readonly string[] = [...new Set([...CONFIG_KEYS.map((k) => k.section), ...NAMED_KEY_SECTIONS.keys()])];

// ---------------------------------------------------------------------------------------------
// Parsing and loading.

function isSection(name: string): boolean {
  return SECTIONS.includes(name);
}

function syntaxProblem(err: TomlError): string {
  // smol-toml's message is a headline, a blank line and a code excerpt; the problem is one line.
  const headline = err.message.split('\n')[0].replace(/^Invalid TOML document:\s*/, '');
  return `TOML syntax error at line ${err.line}, column ${err.column}: ${headline}`;
}

/**
 * TOML text -> validated Config. Keys the text leaves out take their value from defaultConfig().
 * Paths are returned as written; loadConfig resolves them. Throws ConfigError listing every problem.
 */
export function parseConfig(text: string, source: string): Config {
  let document: Record<string, unknown>;
  try {
    // A byte order mark is not TOML, but editors on some systems write one.
    document = parse(text.replace(/^\uFEFF/, ''));
  } catch (err) {
    if (err instanceof TomlError) throw new ConfigError(source, [syntaxProblem(err)]);
    throw err;
  }

  const config = defaultConfig();
  const problems: string[] = [];
  const invalid = new Set<string>();
  for (const [name, sectionValue] of Object.entries(document)) {
    const named = NAMED_KEY_SECTIONS.get(name);
    if (named !== undefined) {
      const before = problems.length;
      (config as Record<string, unknown>)[name] = named(sectionValue, problems);
      if (problems.length > before) invalid.add(name);
      continue;
    }
    const tables = TABLES.get(name);
    if (tables !== undefined) {
      (config as Record<string, unknown>)[name] = tables.parse(sectionValue, problems);
      continue;
    }
    if (!isSection(name)) {
      problems.push(isTable(sectionValue) ? unknownSection(SECTIONS, name) : unknownKey(CONFIG_KEYS, undefined, name));
      continue;
    }
    if (!isTable(sectionValue)) {
      problems.push(`${name} = ${show(sectionValue)}: must be a table: write the keys under a [${name}] header`);
      continue;
    }
    for (const [key, value] of Object.entries(sectionValue)) {
      const spec = KEYS_BY_PATH.get(`${name}.${key}`);
      if (spec === undefined) {
        problems.push(unknownKey(CONFIG_KEYS, name, key));
        continue;
      }
      const checked = spec.check(value, spec.path);
      if (checked.ok) {
        ((config as Record<string, unknown>)[spec.section] as Record<string, unknown>)[spec.field] = checked.value;
      } else {
        invalid.add(spec.path);
        problems.push(...checked.problems);
      }
    }
  }
  // [[listener]] replaces the simple form; both at once would leave the operator guessing which wins.
  if (Array.isArray(document.listener) && document.listener.length > 0) {
    const smtp = isTable(document.smtp) ? document.smtp : {};
    for (const key of ['listen', 'proxy_protocol']) {
      if (key in smtp) problems.push(`smtp.${key}: must not be set with [[listener]] tables (they replace smtp.listen and smtp.proxy_protocol): move it into a [[listener]] table`);
    }
    // What other parts read as this server's own addresses (mail loop detection).
    config.smtp.listen = config.listener.map((l) => l.address);
  }
  problems.push(...crossProblems(config, invalid));
  if (problems.length > 0) throw new ConfigError(source, problems);
  return config;
}

/** A configuration file is a few kilobytes; this bound keeps a wrong path (a log, a device) from being slurped. */
const MAX_CONFIG_FILE_BYTES = 2 ** 20;

function readConfigText(file: string, shownAs: string): string {
  let bytes: Buffer;
  try {
    const stat = statSync(file);
    if (!stat.isFile()) throw new ConfigError(shownAs, [`cannot read "${shownAs}": not a regular file`]);
    if (stat.size > MAX_CONFIG_FILE_BYTES) {
      throw new ConfigError(shownAs, [`cannot read "${shownAs}": larger than ${bytesText(MAX_CONFIG_FILE_BYTES)}`]);
    }
    bytes = readFileSync(file);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(shownAs, [`cannot read "${shownAs}": ${(err as Error).message}`]);
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    // TOML 1.0 section 1: a TOML file must be valid UTF-8.
    throw new ConfigError(shownAs, [`cannot read "${shownAs}": not valid UTF-8`]);
  }
}

/** Pins relative paths to the directory the server was started from, so a later chdir or a worker cannot move them. */
function resolvePaths(config: Config, cwd: string): Config {
  // spool.dir, tls.cert, tls.key, recipients.table: every key whose validator is a path.
  for (const key of CONFIG_KEYS) {
    const section = (config as unknown as Record<string, Record<string, unknown>>)[key.section];
    if (key.withPaths !== undefined) section[key.field] = key.withPaths(section[key.field], (p) => (p === '' ? p : resolve(cwd, p)));
    if (!key.isPath) continue;
    const path = section[key.field];
    if (typeof path === 'string' && path !== '') section[key.field] = resolve(cwd, path);
  }
  resolveRoutePaths(config.routes, (p) => resolve(cwd, p));
  return config;
}

/**
 * Reads and validates the file at `path`, or takes the embedded default when `path` is undefined.
 * Relative paths (the file itself, spool.dir, tls.cert, tls.key) are resolved against `options.cwd`,
 * which defaults to process.cwd(). Throws ConfigError.
 */
export function loadConfig(path?: string, options: { cwd?: string } = {}): Config {
  const cwd = options.cwd ?? process.cwd();
  const config = path === undefined ? defaultConfig() : parseConfig(readConfigText(resolve(cwd, path), path), path);
  const resolved = resolvePaths(config, cwd);
  // The block file is read here too, so check-config names its bad lines before a start does.
  const blockFile = resolved.access.blockFile;
  if (blockFile !== '') {
    let text: string;
    try {
      text = readConfigText(blockFile, blockFile);
    } catch (err) {
      throw new ConfigError(path ?? 'config', [`access.block_file = ${show(blockFile)}: ${err instanceof ConfigError ? err.problems[0] : String(err)}`]);
    }
    const { problems } = parseBlockFile(text);
    if (problems.length > 0) throw new ConfigError(path ?? 'config', problems.map((p) => `access.block_file ${blockFile}: ${p}`));
  }
  return resolved;
}
