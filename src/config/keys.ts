// The shape of the key tables: one ConfigKey per TOML key (where it lives in TOML and in Config,
// what it accepts, its default and its documentation), one ListKey per key of an array of
// tables, and CheckConfig, what a policy check contributes to the configuration from its own
// directory (policy/checks/<name>/config.ts). The tables themselves are in keys/ (the core
// sections) and in each check's directory; load.ts assembles them. Pure.

import type { Checked, Validator } from './validators.ts';

/** One configuration key: where it lives in TOML and in Config, what it accepts, and its documentation. */
export type ConfigKey = {
  /** TOML path, e.g. "smtp.max_message_bytes". */
  readonly path: string;
  readonly section: string;
  /** The TOML key inside its section, e.g. "max_message_bytes". */
  readonly key: string;
  /** The field in `Config[section]`, e.g. "maxMessageBytes". */
  readonly field: string;
  /** Config path for readers, e.g. "smtp.maxMessageBytes". */
  readonly configPath: string;
  readonly type: string;
  readonly allowed: string;
  /** The embedded default written as TOML, e.g. `["127.0.0.1:2525"]`. */
  readonly defaultToml: string;
  /** What the key does; Markdown, one paragraph. */
  readonly doc: string;
  readonly check: (value: unknown, path: string) => Checked<unknown>;
  /** A file system path (resolved against the working directory on load). */
  readonly isPath: boolean;
  /** For a value holding paths inside it (`batv.keys[].secret_file`): resolves them (see Validator.withPaths). */
  readonly withPaths?: (value: unknown, toAbsolute: (path: string) => string) => unknown;
};

/**
 * The `entry` function for the sections of `defaults`: its type parameters tie each entry's
 * validator to the type of its field, so the untyped assignment in parseConfig is safe by
 * construction, and the documented default is the embedded one.
 */
export function keyTable<D extends object>(defaults: D) {
  return function entry<S extends keyof D & string, F extends keyof D[S] & string>(
    section: S,
    key: string,
    field: F,
    validator: Validator<D[S][F]>,
    doc: string,
  ): ConfigKey {
    return {
      path: `${section}.${key}`,
      section,
      key,
      field,
      configPath: `${section}.${field}`,
      type: validator.type,
      allowed: validator.allowed,
      defaultToml: validator.toToml(defaults[section][field]),
      doc,
      check: (value, path) => validator.check(value, path),
      isPath: validator.isPath === true,
      ...(validator.withPaths === undefined ? {} : { withPaths: validator.withPaths as (value: unknown, toAbsolute: (path: string) => string) => unknown }),
    };
  };
}

/** One key of an array of tables (`[[dnsbl]]`: each table is one DNS list). */
export type ListKey = {
  /** Documented path, e.g. "dnsbl[].zone". */
  readonly path: string;
  /** The array's name, e.g. "dnsbl". */
  readonly table: string;
  readonly key: string;
  readonly field: string;
  readonly type: string;
  readonly allowed: string;
  /** `undefined` for a key every table must set. */
  readonly defaultToml: string | undefined;
  readonly doc: string;
  readonly check: (value: unknown, path: string) => Checked<unknown>;
};

/** The `listKey` function for the tables of `table`, whose items have the shape T. */
export function listKeyTable<T extends object>(table: string) {
  return function listKey<F extends keyof T & string>(key: string, field: F, validator: Validator<T[F]>, fallback: T[F] | undefined, doc: string): ListKey {
    return {
      path: `${table}[].${key}`,
      table,
      key,
      field,
      type: validator.type,
      allowed: validator.allowed,
      defaultToml: fallback === undefined ? undefined : validator.toToml(fallback),
      doc,
      check: (value, path) => validator.check(value, path),
    };
  };
}

/** An array of tables a check reads (`[[dnsbl]]`): its keys, and its parser (every problem into `problems`). */
export type ConfigTables = {
  readonly name: string;
  readonly keys: readonly ListKey[];
  parse(value: unknown, problems: string[]): unknown;
};

/**
 * What one policy check contributes to the configuration, from its own directory: its sections
 * (their embedded defaults, keyed by section name), their keys, any array of tables, and when
 * its sections switch it on (then `policy.checks` must list it: the cross-check).
 */
export type CheckConfig<N extends string = string, D extends object = object> = {
  readonly name: N;
  readonly defaults: D;
  readonly keys: readonly ConfigKey[];
  readonly tables?: ConfigTables;
  /** Whether its sections ask for the check, e.g. `spf.enabled = true`. */
  isOn(sections: D): boolean;
  /** How the cross-check says it, e.g. "spf.enabled = true". */
  readonly onWhen: string;
};
