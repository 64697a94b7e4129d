// The DNS-list check's part of the configuration: the [dnslists] section, the [[dnsbl]] tables
// (one per list: their keys and their parser, every problem named by its index) and when they
// ask for the check. Data and validators only: the loader reads it without loading the check
// (check.ts); answer patterns are checked with the check's own parser (pattern.ts, a leaf).

import { keyTable, listKeyTable, type CheckConfig, type ListKey } from '../../../config/keys.ts';
import { closest } from '../../../config/suggest.ts';
import { domainName } from '../../../config/values.ts';
import { fail, int, intOrOff, isTable, ok, oneOf, show, stringList, type Validator } from '../../../config/validators.ts';
import { parseAnswerPattern } from './pattern.ts';

/** One `[[dnsbl]]` table: a DNS block list (positive weight) or allow list (negative weight). */
export type DnsListConfig = { zone: string; weight: number; answers: string[] };

export type DnsListsConfig = {
  threshold: number;
  /** A score at or below this accepts the client for the stage (skips the later checks); null = never. */
  allowThreshold: number | null;
  stage: 'connect' | 'rcpt';
  action: 'reject' | 'tempfail';
  negativeCacheSeconds: number;
};

const DEFAULTS = {
  /** `[[dnsbl]]` tables, in file order. */
  dnsbl: [] as DnsListConfig[],
  dnslists: { threshold: 1, allowThreshold: null, stage: 'rcpt', action: 'reject', negativeCacheSeconds: 60 } as DnsListsConfig,
};

/** A DNS list's zone: a domain name of two labels or more (the check writes it into replies). */
function dnsListZone(): Validator<string> {
  const name = domainName();
  return {
    ...name,
    allowed: 'a domain name of two or more labels, e.g. `"zen.example"`',
    check(value, path) {
      const checked = name.check(value, path);
      if (checked.ok && !checked.value.includes('.')) return fail(path, value, 'must have two or more labels, e.g. "zen.example"');
      return checked;
    },
  };
}

/** A signed integer weight for a DNS list. */
function weight(): Validator<number> {
  return {
    type: 'integer',
    allowed: '-100 to 100, not 0; negative for an allow list',
    check(value, path) {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < -100 || value > 100) {
        return fail(path, value, 'must be an integer from -100 to 100 (negative for an allow list)');
      }
      if (value === 0) return fail(path, value, 'must not be 0 (a list that never counts); remove the [[dnsbl]] table instead');
      return ok(value);
    },
    toToml: String,
  };
}

/** Answer patterns of a DNS list, postscreen style: each octet a number, [a..b] or [a;b;c]. */
function answerPatterns(): Validator<string[]> {
  return stringList({
    what: 'answer patterns',
    example: '["127.0.0.[2..11]"]',
    allowed: 'IPv4 patterns whose octets are a number, `[a..b]` or `[a;b;c]`; `[]` for any answer in 127.0.0.0/8 but 127.255.255.0/24',
    element(value, path) {
      // The DNS list check's own parser: what the loader accepts is exactly what the check runs.
      const parsed = parseAnswerPattern(value);
      return parsed.ok ? ok(value) : fail(path, value, parsed.problem.replace(/^answer pattern "[^"]*",? /, ''));
    },
  });
}

const listKey = listKeyTable<DnsListConfig>('dnsbl');

export const DNSBL_KEYS: readonly ListKey[] = [
  listKey('zone', 'zone', dnsListZone(), undefined,
    'The DNS list\'s zone, e.g. `"zen.example"`: a client 192.0.2.1 is looked up as `1.2.0.192.zen.example` ' +
    '(IPv6: 32 reversed nibbles). Required. A zone may appear in several tables with different `answers` and ' +
    'weights (the trust levels of an allow list); it is still asked once per client.'),
  listKey('weight', 'weight', weight(), 1,
    'What a listing adds to the client\'s score (`dnslists.threshold` refuses). Negative for an allow list ' +
    '(a DNSWL): its listing offsets block lists, or accepts with `dnslists.allow_threshold`.'),
  listKey('answers', 'answers', answerPatterns(), [],
    'Which A answers count as listed, e.g. `["127.0.0.[2..11]"]` or `["127.0.0.2", "127.0.0.[4;9]"]`. `[]`: any ' +
    'answer in 127.0.0.0/8 except 127.255.255.0/24, which lists such as Spamhaus use for "query refused" errors ' +
    'and which never counts.'),
];

/** `[[dnsbl]]` tables -> DnsListConfig[], with each problem named by its index ("dnsbl[1].weight"). */
function parseDnsLists(value: unknown, problems: string[]): DnsListConfig[] {
  if (!Array.isArray(value) || !value.every(isTable)) {
    problems.push(`dnsbl = ${show(value)}: must be tables: write each list under its own [[dnsbl]] header`);
    return [];
  }
  const lists: DnsListConfig[] = [];
  const zones = new Map<string, number>();
  value.forEach((table, i) => {
    const list: Partial<DnsListConfig> = { weight: 1, answers: [] };
    let isValid = true;
    for (const [key, item] of Object.entries(table)) {
      const spec = DNSBL_KEYS.find((k) => k.key === key);
      if (spec === undefined) {
        const near = closest(key, DNSBL_KEYS.map((k) => k.key));
        problems.push(`unknown key "dnsbl[${i}].${key}"${near === undefined ? '' : ` (did you mean "dnsbl[${i}].${near}"?)`}`);
        isValid = false;
        continue;
      }
      const checked = spec.check(item, `dnsbl[${i}].${key}`);
      if (checked.ok) (list as Record<string, unknown>)[spec.field] = checked.value;
      else {
        problems.push(...checked.problems);
        isValid = false;
      }
    }
    if (list.zone === undefined) {
      if (!('zone' in table)) problems.push(`dnsbl[${i}]: zone must be set, e.g. zone = "zen.example"`);
      return;
    }
    list.zone = list.zone.toLowerCase();
    // A zone may appear again with other answers and weight (trust levels of one allow list);
    // the same zone with the same answers would count one listing twice.
    const id = `${list.zone} ${JSON.stringify(list.answers ?? [])}`;
    const first = zones.get(id);
    if (first !== undefined) {
      problems.push(`dnsbl[${i}].zone = ${show(list.zone)}: already listed with the same answers as dnsbl[${first}]`);
      return;
    }
    zones.set(id, i);
    if (isValid) lists.push(list as DnsListConfig);
  });
  return lists;
}

const entry = keyTable(DEFAULTS);

export const dnsblConfig = {
  name: 'dnsbl',
  defaults: DEFAULTS,
  keys: [
    entry('dnslists', 'threshold', 'threshold', int(1, 1000),
      'The score at which a client is refused: the sum of the weights of the `[[dnsbl]]` lists that list its ' +
      'address. With the default weights of 1, one listing refuses.'),
    entry('dnslists', 'allow_threshold', 'allowThreshold', intOrOff(-1000, -1),
      'A score at or below this accepts the client at the DNS list\'s stage, so the checks after it at that stage ' +
      '(greylisting, say) do not run: give an allow list a negative weight. Negative only: an unlisted client scores ' +
      '0. `"off"`: an allow list only offsets block lists.'),
    entry('dnslists', 'stage', 'stage', oneOf(['connect', 'rcpt']),
      '`"rcpt"` refuses a listed client at each RCPT (the reply names the list, and the client\'s sender and ' +
      'recipients appear in the log); `"connect"` refuses it in the greeting (`554`), leaving only QUIT.'),
    entry('dnslists', 'action', 'action', oneOf(['reject', 'tempfail']),
      '`"reject"` answers a listed client `554 5.7.1`; `"tempfail"` answers `450 4.7.1` (at connect `421 4.7.1` and ' +
      'the connection closes: a greeting can only be 220, 554 or 421), for trying a new list without losing mail.'),
    entry('dnslists', 'negative_cache_seconds', 'negativeCacheSeconds', int(0, 3600),
      'How long "not listed" is cached per address and list (listed answers are cached for their DNS TTL).'),
  ],
  tables: { name: 'dnsbl', keys: DNSBL_KEYS, parse: parseDnsLists },
  isOn: (c) => c.dnsbl.length > 0,
  onWhen: '[[dnsbl]] tables are present',
} satisfies CheckConfig<'dnsbl', typeof DEFAULTS>;
