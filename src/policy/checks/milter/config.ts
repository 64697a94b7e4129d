// The milter check's part of the configuration: the [[milter]] tables (one per filter, in chain
// order: their keys and their parser, every problem named by its index) and when they ask for
// the check. Data and validators only: the loader reads it without loading the check (check.ts).

import { listKeyTable, type CheckConfig, type ListKey } from '../../../config/keys.ts';
import { closest } from '../../../config/suggest.ts';
import { fail, int, isTable, ok, oneOf, show, type Validator } from '../../../config/validators.ts';
import type { MilterAddress } from '../../../filters/milter/client.ts';
import { formatEndpoint, parseEndpoint } from '../../../net/endpoint.ts';

/** One `[[milter]]` table: a filter speaking the Sendmail milter protocol. */
export type MilterConfig = {
  address: MilterAddress;
  /** What a filter that is down, slow or speaks garbage means for the mail: refuse it for now, or pass it unfiltered. */
  onFailure: 'tempfail' | 'accept';
  connectTimeoutSeconds: number;
  commandTimeoutSeconds: number;
};

const DEFAULTS = {
  /** `[[milter]]` tables, in file order: the chain. */
  milter: [] as MilterConfig[],
};

/** A filter's address (net/endpoint.ts has the forms), with the milter's examples in its problems. */
export function parseMilterAddress(text: string): MilterAddress | string {
  return parseEndpoint(text, { tcp: '127.0.0.1:8891', unix: '/run/opendkim/opendkim.sock' });
}

function milterAddress(): Validator<MilterAddress> {
  return {
    type: 'string',
    allowed: '`"host:port"`, `"[ipv6]:port"`, `"inet:port@host"`, or a UNIX socket: an absolute path or `"unix:/path"`',
    check(value, path) {
      if (typeof value !== 'string') return fail(path, value, 'must be a string such as "127.0.0.1:8891" or "/run/opendkim/opendkim.sock"');
      const parsed = parseMilterAddress(value);
      return typeof parsed === 'string' ? fail(path, value, parsed) : ok(parsed);
    },
    toToml: (a) => JSON.stringify(formatEndpoint(a)),
  };
}

const listKey = listKeyTable<MilterConfig>('milter');

export const MILTER_KEYS: readonly ListKey[] = [
  listKey('address', 'address', milterAddress(), undefined,
    'Where the filter listens: `"127.0.0.1:8891"`, `"[::1]:8891"`, `"inet:8891@127.0.0.1"`, or a UNIX socket ' +
    '(`"/run/opendkim/opendkim.sock"`, `"unix:/run/opendkim/opendkim.sock"`). Required. Filters run in the order ' +
    'of their tables; see docs/filters.md "Milter".'),
  listKey('on_failure', 'onFailure', oneOf(['tempfail', 'accept']), 'tempfail',
    'When the filter cannot be reached, times out or breaks the protocol: `"tempfail"` refuses the session\'s ' +
    'transactions with `451 4.7.1` (the sender retries; nothing passes unfiltered), `"accept"` goes on without ' +
    'this filter for the rest of the session. Either way a warning names the filter and the reason.'),
  listKey('connect_timeout_seconds', 'connectTimeoutSeconds', int(1, 60), 10,
    'How long connecting to the filter may take.'),
  listKey('command_timeout_seconds', 'commandTimeoutSeconds', int(1, 100), 30,
    'How long the filter may take to answer one command (a progress report restarts it), and to take one ' +
    'write. A whole stage, across the chain, is bounded by 100 s as well.'),
];

/** `[[milter]]` tables -> MilterConfig[], with each problem named by its index ("milter[1].address"). */
function parseMilters(value: unknown, problems: string[]): MilterConfig[] {
  if (!Array.isArray(value) || !value.every(isTable)) {
    problems.push(`milter = ${show(value)}: must be tables: write each filter under its own [[milter]] header`);
    return [];
  }
  const out: MilterConfig[] = [];
  value.forEach((table, i) => {
    const m: Partial<MilterConfig> = { onFailure: 'tempfail', connectTimeoutSeconds: 10, commandTimeoutSeconds: 30 };
    let isValid = true;
    for (const [key, item] of Object.entries(table)) {
      const spec = MILTER_KEYS.find((k) => k.key === key);
      if (spec === undefined) {
        const near = closest(key, MILTER_KEYS.map((k) => k.key));
        problems.push(`unknown key "milter[${i}].${key}"${near === undefined ? '' : ` (did you mean "milter[${i}].${near}"?)`}`);
        isValid = false;
        continue;
      }
      const checked = spec.check(item, `milter[${i}].${key}`);
      if (checked.ok) (m as Record<string, unknown>)[spec.field] = checked.value;
      else {
        problems.push(...checked.problems);
        isValid = false;
      }
    }
    if (!('address' in table)) {
      problems.push(`milter[${i}]: address must be set, e.g. address = "127.0.0.1:8891"`);
      return;
    }
    if (isValid) out.push(m as MilterConfig);
  });
  return out;
}

export const milterConfig = {
  name: 'milter',
  defaults: DEFAULTS,
  keys: [],
  tables: { name: 'milter', keys: MILTER_KEYS, parse: parseMilters },
  isOn: (c) => c.milter.length > 0,
  onWhen: '[[milter]] tables are present',
} satisfies CheckConfig<'milter', typeof DEFAULTS>;
