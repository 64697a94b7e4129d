// The [batv] keys: which domains sign their reverse-paths with BATV prvs tags and refuse bounces
// to untagged or forged addresses, the keys, the validity window, exceptions, and what a bad
// bounce gets. Its own defaults (not defaultConfig(): the section reaches Config through the
// policy registry, as the BATV check's configuration part) and validators. Pure: the key files
// are read at start by delivery/batv.ts (loadBatvKeys), never here.
// draft-levine-smtp-batv-01.

import { keyTable, type CheckConfig } from '../keys.ts';
import { domainList } from '../values.ts';
import { duration, fail, isTable, ok, oneOf, show, stringList, typeName, type Checked, type Validator } from '../validators.ts';

export type BatvKeyConfig = { id: number; secretFile: string };

export type BatvAction = 'reject' | 'tag' | 'accept';

export type BatvConfig = {
  domains: string[];
  keys: BatvKeyConfig[];
  /** How long a tag stays valid, in seconds (whole days). */
  maxAgeSeconds: number;
  exceptions: string[];
  action: BatvAction;
};

const DEFAULTS = {
  batv: { domains: [], keys: [], maxAgeSeconds: 7 * 86_400, exceptions: [], action: 'reject' } as BatvConfig,
};

/** The tag's key number is one digit (draft 4.1: K). */
const MAX_KEYS = 10;

function keyList(): Validator<BatvKeyConfig[]> {
  const example = '[{ id = 0, secret_file = "batv.key" }]';
  const one = (value: unknown, path: string): Checked<BatvKeyConfig> => {
    if (!isTable(value)) return fail(path, value, `must be a table such as { id = 0, secret_file = "batv.key" }, not ${typeName(value)}`);
    const problems: string[] = [];
    for (const k of Object.keys(value)) if (k !== 'id' && k !== 'secret_file') problems.push(`${path}.${k}: unknown key (a BATV key has "id" and "secret_file")`);
    const { id, secret_file: secretFile } = value;
    if (id === undefined) problems.push(`${path}: "id" is missing (the key number in the tag, 0 to 9)`);
    else if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 9) problems.push(`${path}.id = ${show(id)}: must be an integer from 0 to 9 (the tag's one-digit key number)`);
    if (secretFile === undefined) problems.push(`${path}: "secret_file" is missing (a file holding the secret, at least 16 bytes)`);
    else if (typeof secretFile !== 'string' || secretFile === '') problems.push(`${path}.secret_file = ${show(secretFile)}: must be a non-empty string (a path)`);
    // Security: a NUL would be cut off by the OS, so the file opened would not be the one named.
    else if (secretFile.includes('\0')) problems.push(`${path}.secret_file = ${show(secretFile)}: must not contain a NUL character`);
    return problems.length > 0 ? { ok: false, problems } : ok({ id: id as number, secretFile: secretFile as string });
  };
  return {
    type: 'array of tables',
    allowed: `up to ${MAX_KEYS} tables \`{ id = 0..9, secret_file = "PATH" }\` with distinct ids; \`[]\` for none`,
    check(value, path) {
      if (!Array.isArray(value)) return fail(path, value, `must be an array of tables, e.g. ${example}`);
      if (value.length > MAX_KEYS) return fail(path, value, `must hold at most ${MAX_KEYS} keys (the key number is one digit)`);
      const keys: BatvKeyConfig[] = [];
      const problems: string[] = [];
      value.forEach((item, i) => {
        const checked = one(item, `${path}[${i}]`);
        if (!checked.ok) problems.push(...checked.problems);
        else if (keys.some((k) => k.id === checked.value.id)) problems.push(`${path}[${i}].id = ${checked.value.id}: used twice; each key needs its own number`);
        else keys.push(checked.value);
      });
      return problems.length > 0 ? { ok: false, problems } : ok(keys);
    },
    toToml: (value) => `[${value.map((k) => `{ id = ${k.id}, secret_file = ${JSON.stringify(k.secretFile)} }`).join(', ')}]`,
    withPaths: (value, toAbsolute) => value.map((k) => ({ id: k.id, secretFile: toAbsolute(k.secretFile) })),
  };
}

function addressList(): Validator<string[]> {
  return stringList({
    what: 'addresses',
    example: '["lists@example.com"]',
    allowed: 'full addresses (`local@domain`); `[]` for none',
    noun: 'a string (an address)',
    element(value, path) {
      const at = value.lastIndexOf('@');
      if (at <= 0 || at === value.length - 1 || /[\s<>\x00-\x1f\x7f]/.test(value)) {
        return fail(path, value, 'must be a full address such as "lists@example.com" (no angle brackets or spaces)');
      }
      return ok(value.toLowerCase());
    },
  });
}

const entry = keyTable(DEFAULTS);

export const BATV_KEYS = [
  entry('batv', 'domains', 'domains', domainList(),
    'Domains whose reverse-paths are signed with a BATV tag (`prvs=KDDDSSSSSS=local@domain`) on mail relayed for ' +
    '`relay.networks`, and whose local recipients accept mail from the null reverse-path `<>` (bounces, ' +
    'auto-replies) only at a valid, unexpired tag. Each must also be in `domains.local`. `[]` turns BATV off. ' +
    'See docs/delivery.md "BATV".'),
  entry('batv', 'keys', 'keys', keyList(),
    'The signing keys: `id` is the tag\'s key number (0 to 9), `secret_file` a file holding the secret (at least 16 ' +
    'bytes; a final newline is ignored; e.g. `head -c 32 /dev/urandom | base64 > batv.key`), resolved against the ' +
    'working directory. The first key signs, every key listed verifies: to rotate, put a new key first and remove ' +
    'the old one after `max_age`. Required when `domains` is set.'),
  entry('batv', 'max_age', 'maxAgeSeconds', duration(86_400, 365 * 86_400, { unit: 'd' }),
    'How long a tag stays valid after it is made, in whole days: a bounce that comes back later is refused. The ' +
    'draft suggests about a week; bounces from queues that retry for 5 days still arrive in time.'),
  entry('batv', 'exceptions', 'exceptions', addressList(),
    'Addresses of the BATV domains that are never signed and whose bounces are never checked (mailing-list ' +
    'senders whose list software matches bounces by address, addresses used with sender-verification callouts). ' +
    'Compared case-insensitively.'),
  entry('batv', 'action', 'action', oneOf(['reject', 'tag', 'accept']),
    'What a message from `<>` to an untagged, expired or forged address of a BATV domain gets: `"reject"` refuses ' +
    'the recipient with `550 5.7.1`; `"tag"` accepts it with an `X-Portcullis-BATV:` header field naming the ' +
    'result; `"accept"` accepts it and only logs (for a roll-out, while old untagged mail may still bounce).'),
];

/** The [batv] section as a policy check's configuration part (checks/batv/config.ts registers it). */
export const batvCheckConfig = {
  name: 'batv',
  defaults: DEFAULTS,
  keys: BATV_KEYS,
  isOn: (c) => c.batv.domains.length > 0,
  onWhen: 'batv.domains is set',
} satisfies CheckConfig<'batv', typeof DEFAULTS>;
