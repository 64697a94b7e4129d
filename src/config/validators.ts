// The configuration's value validators: each knows its type, what it allows (for the docs), how
// to check a value and how to write one as TOML. Generic shapes only (integers, booleans,
// choices, paths, lists); what a value means is in values.ts and the key tables. Pure.

import { TomlDate } from 'smol-toml';

export type Checked<T> = { ok: true; value: T } | { ok: false; problems: string[] };

export type Validator<T> = {
  /** Shown in the docs, e.g. "integer". */
  type: string;
  /** Shown in the docs: the values accepted. */
  allowed: string;
  check(value: unknown, path: string): Checked<T>;
  /** Writes a value as TOML: used for the documented defaults and the round-trip test. */
  toToml(value: T): string;
  /** A file system path, resolved against the working directory when the file is loaded. */
  readonly isPath?: boolean;
  /** For a value that holds paths inside it (a list of tables): the value with each resolved by `toAbsolute`. */
  readonly withPaths?: (value: T, toAbsolute: (path: string) => string) => T;
};

export function ok<T>(value: T): Checked<T> {
  return { ok: true, value };
}

export function fail(path: string, value: unknown, text: string): { ok: false; problems: string[] } {
  return { ok: false, problems: [`${path} = ${show(value)}: ${text}`] };
}

const MAX_SHOWN_CHARS = 80;

/** A value as the operator wrote it (near enough), one line, bounded so a huge value cannot flood the output. */
export function show(value: unknown): string {
  const text = showUnbounded(value);
  return text.length > MAX_SHOWN_CHARS ? `${text.slice(0, MAX_SHOWN_CHARS - 1)}…` : text;
}

function showUnbounded(value: unknown): string {
  // JSON string escapes keep control characters from reaching a terminal or log raw.
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return `[${value.map(showUnbounded).join(', ')}]`;
  if (isTable(value)) {
    const entries = Object.entries(value).map(([k, v]) => `${k} = ${showUnbounded(v)}`);
    return `{ ${entries.join(', ')} }`;
  }
  return String(value);
}

export function typeName(value: unknown): string {
  if (typeof value === 'string') return 'a string';
  if (typeof value === 'boolean') return 'a boolean';
  if (typeof value === 'number') return Number.isInteger(value) ? 'an integer' : 'a float';
  if (value instanceof Date) return 'a date';
  if (Array.isArray(value)) return 'an array';
  if (isTable(value)) return 'a table';
  return typeof value;
}

export function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof TomlDate);
}

const BYTE_UNITS = [
  ['GiB', 2 ** 30],
  ['MiB', 2 ** 20],
  ['KiB', 2 ** 10],
] as const;

/** 1048576 -> "1048576 (1 MiB)", so limits in messages and docs read at a glance. */
export function bytesText(n: number): string {
  for (const [unit, size] of BYTE_UNITS) {
    if (n >= size && n % size === 0) return `${n} (${n / size} ${unit})`;
  }
  return String(n);
}

/** `rfc` names where the minimum comes from; `maxReason` says why the maximum is what it is. */
export function int(min: number, max: number, options: { rfc?: string; bytes?: boolean; maxReason?: string } = {}): Validator<number> {
  const fmt = options.bytes === true ? bytesText : String;
  const rfc = options.rfc === undefined ? '' : ` (${options.rfc})`;
  const maxReason = options.maxReason === undefined ? '' : `: ${options.maxReason}`;
  return {
    type: 'integer',
    allowed:
      `${fmt(min)} to ${fmt(max)}${options.rfc === undefined ? '' : `; the minimum is from ${options.rfc}`}` +
      `${options.maxReason === undefined ? '' : `; the maximum is ${options.maxReason}`}`,
    check(value, path) {
      if (typeof value !== 'number' || !Number.isInteger(value)) {
        return fail(path, value, `must be an integer from ${fmt(min)} to ${fmt(max)}, not ${typeName(value)}`);
      }
      if (value < min) return fail(path, value, `must be an integer >= ${fmt(min)}${rfc}`);
      if (value > max) return fail(path, value, `must be an integer <= ${fmt(max)}${maxReason}`);
      return ok(value);
    },
    toToml: String,
  };
}

export function bool(): Validator<boolean> {
  return {
    type: 'boolean',
    allowed: '`true` or `false`',
    check(value, path) {
      return typeof value === 'boolean' ? ok(value) : fail(path, value, `must be true or false, not ${typeName(value)}`);
    },
    toToml: String,
  };
}



export function oneOf<const T extends string>(choices: readonly T[]): Validator<T> {
  const listed = choices.map((c) => JSON.stringify(c)).join(', ');
  return {
    type: 'string',
    allowed: `one of ${choices.map((c) => `\`"${c}"\``).join(', ')}`,
    check(value, path) {
      if (typeof value === 'string' && (choices as readonly string[]).includes(value)) return ok(value as T);
      // `vrfy = 252` is an easy slip: the choice is a string, so say how to write it.
      const quoted = (choices as readonly string[]).includes(String(value)) && typeof value !== 'string';
      return fail(path, value, `must be one of ${listed}${quoted ? ` (a string: write "${String(value)}" in quotes)` : ''}`);
    },
    toToml: (value) => JSON.stringify(value),
  };
}

/** A file system path. `allowEmpty` is for optional files, where "" means "none". */
export function pathString(options: { allowEmpty: boolean }): Validator<string> {
  return {
    type: 'string (path)',
    isPath: true,
    allowed: options.allowEmpty ? 'a file path, or `""` for none' : 'a non-empty directory path',
    check(value, path) {
      if (typeof value !== 'string') return fail(path, value, `must be a string (a path), not ${typeName(value)}`);
      if (value === '' && !options.allowEmpty) return fail(path, value, 'must not be empty');
      // Security: a NUL would be cut off by the OS, so the file opened would not be the one named.
      if (value.includes('\0')) return fail(path, value, 'must not contain a NUL character');
      return ok(value);
    },
    toToml: (value) => JSON.stringify(value),
  };
}


/** Applies `element` to each item, so each bad item is reported with its index. */
export function arrayOf<T>(
  what: string,
  example: string,
  element: (value: unknown, path: string) => Checked<T>,
): (value: unknown, path: string) => Checked<T[]> {
  return (value, path) => {
    if (!Array.isArray(value)) return fail(path, value, `must be an array of ${what}, e.g. ${example}`);
    const values: T[] = [];
    const problems: string[] = [];
    value.forEach((item, i) => {
      const checked = element(item, `${path}[${i}]`);
      if (checked.ok) values.push(checked.value);
      else problems.push(...checked.problems);
    });
    return problems.length === 0 ? ok(values) : { ok: false, problems };
  };
}

/** An integer, or `"off"`: the feature the number tunes is disabled. */
export function intOrOff(min: number, max: number): Validator<number | null> {
  return {
    type: 'integer or string',
    allowed: `${min} to ${max}, or \`"off"\``,
    check(value, path) {
      if (value === 'off') return ok(null);
      if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) return ok(value);
      return fail(path, value, `must be an integer from ${min} to ${max}, or "off"`);
    },
    toToml: (value) => (value === null ? '"off"' : String(value)),
  };
}


/**
 * An array of strings, each checked by `element`, each bad item reported with its index: the one
 * shape every list-valued key shares. `noun` names an item in the type problem ("must be a CIDR
 * string, not an integer"); `post` checks the list as a whole (duplicates, at least one item).
 */
export function stringList<T = string>(options: {
  what: string;
  example: string;
  allowed: string;
  noun?: string;
  element: (value: string, path: string) => Checked<T>;
  /** What an item that is not a string gets, when "must be <noun>" is not the best answer. */
  nonString?: (value: unknown, path: string) => Checked<T>;
  post?: (values: T[], value: unknown, path: string) => Checked<T[]>;
  /** An item as TOML text; default: the item itself as a string. */
  itemToml?: (item: T) => string;
}): Validator<T[]> {
  const noun = options.noun ?? 'a string';
  const each = arrayOf(options.what, options.example, (value, path): Checked<T> => {
    if (typeof value === 'string') return options.element(value, path);
    return options.nonString?.(value, path) ?? fail(path, value, `must be ${noun}, not ${typeName(value)}`);
  });
  const itemToml = options.itemToml ?? ((item: T) => JSON.stringify(item));
  return {
    type: 'array of strings',
    allowed: options.allowed,
    check(value, path) {
      const checked = each(value, path);
      return !checked.ok || options.post === undefined ? checked : options.post(checked.value, value, path);
    },
    toToml: (value) => `[${value.map(itemToml).join(', ')}]`,
  };
}

const DURATION_UNITS = [
  ['d', 86_400],
  ['h', 3_600],
  ['m', 60],
  ['s', 1],
] as const;

/** Seconds as the shortest duration text: 604800 -> "7d", 90 -> "90s". */
export function durationText(seconds: number): string {
  for (const [unit, size] of DURATION_UNITS) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}

/**
 * A duration written as a number and a unit, `"7d"`, `"4h"`, `"30m"` or `"90s"`; the value is in
 * seconds. `unit: 'd'` accepts whole days only (a BATV tag's expiry is a day number).
 */
export function duration(minSeconds: number, maxSeconds: number, options: { unit?: 'd' } = {}): Validator<number> {
  const units = options.unit === 'd' ? 'd' : 'd, h, m or s';
  const example = options.unit === 'd' ? '"7d"' : '"7d", "4h", "30m" or "90s"';
  return {
    type: 'string (duration)',
    allowed: `${durationText(minSeconds)} to ${durationText(maxSeconds)}, written as a number and a unit (${units}), e.g. ${example}`,
    check(value, path) {
      if (typeof value !== 'string') {
        return fail(path, value, `must be a duration string such as ${example}, not ${typeName(value)}${typeof value === 'number' ? ` (write "${value}${options.unit ?? 's'}")` : ''}`);
      }
      const m = /^([0-9]{1,9})([dhms])$/.exec(value);
      if (m === null) return fail(path, value, `must be a number and a unit (${units}), e.g. ${example}`);
      if (options.unit === 'd' && m[2] !== 'd') return fail(path, value, `must be a whole number of days, e.g. ${example}`);
      const seconds = Number(m[1]) * DURATION_UNITS.find(([u]) => u === m[2])![1];
      if (seconds < minSeconds) return fail(path, value, `must be at least ${durationText(minSeconds)}`);
      if (seconds > maxSeconds) return fail(path, value, `must be at most ${durationText(maxSeconds)}`);
      return ok(seconds);
    },
    toToml: (value) => JSON.stringify(durationText(value)),
  };
}

/** A number (integer or float) from `min` to `max`, or `"off"` when `allowOff` (then null). */
export function score<Off extends boolean>(min: number, max: number, allowOff: Off): Validator<Off extends true ? number | null : number> {
  const range = `a number from ${min} to ${max}${allowOff ? ', or "off"' : ''}`;
  return {
    type: allowOff ? 'number or string' : 'number',
    allowed: `${min} to ${max}${allowOff ? ', or `"off"`' : ''}`,
    check(value, path) {
      if (allowOff && value === 'off') return ok(null as Off extends true ? number | null : number);
      if (typeof value === 'number' && Number.isFinite(value) && value >= min && value <= max) return ok(value as Off extends true ? number | null : number);
      return fail(path, value, `must be ${range}${typeof value === 'number' ? '' : `, not ${typeName(value)}`}`);
    },
    toToml: (value) => (value === null ? '"off"' : Number.isInteger(value) ? `${value}.0` : String(value)),
  };
}
