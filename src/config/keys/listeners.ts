// The [[listener]] tables: listener profiles, each an address with its role and whether a PROXY
// protocol header comes first. The simple form, smtp.listen with smtp.proxy_protocol, keeps
// working; a file that has [[listener]] tables must not set those two as well (load.ts says so).
// Per-listener checks and limits are for later (issue 11); today every listener shares [limits].

import { bool, fail, ok, oneOf, show, isTable, type Validator } from '../validators.ts';
import { formatListen, parseListen } from '../values.ts';
import { listKeyTable, type ConfigTables, type ListKey } from '../keys.ts';
import { closest } from '../suggest.ts';
import type { ListenAddress } from '../types.ts';

export type ListenerConfig = { address: ListenAddress; role: 'mx'; proxyProtocol: boolean };

function listenAddress(): Validator<ListenAddress> {
  return {
    type: 'string',
    allowed: '`"host:port"`, IPv6 in brackets (`"[::]:25"`), as `smtp.listen` takes them',
    check(value, path) {
      if (typeof value !== 'string') return fail(path, value, 'must be a string "host:port"');
      const parsed = parseListen(value);
      return typeof parsed === 'string' ? fail(path, value, parsed) : ok(parsed);
    },
    toToml: (value) => JSON.stringify(formatListen(value)),
  };
}

const listKey = listKeyTable<ListenerConfig>('listener');

export const LISTENER_KEYS: readonly ListKey[] = [
  listKey('address', 'address', listenAddress(), undefined,
    'Where this listener accepts connections, `"host:port"` as `smtp.listen` takes it. Required; no two ' +
    'listeners may share an address. With `[[listener]]` tables, `smtp.listen` and `smtp.proxy_protocol` must ' +
    'not be set: the tables replace them.'),
  listKey('role', 'role', oneOf(['mx'] as const), 'mx',
    'What the listener serves: `"mx"`, mail from other servers (the only role for now).'),
  listKey('proxy_protocol', 'proxyProtocol', bool(), false,
    'Every connection to this listener starts with a PROXY protocol header from a load balancer in ' +
    '`proxy.trusted` (as `smtp.proxy_protocol`, for this listener only). Admission and every check then judge ' +
    'the client the header names.'),
];

/** `[[listener]]` tables -> ListenerConfig[], each problem named by its index ("listener[1].address"). */
function parseListeners(value: unknown, problems: string[]): ListenerConfig[] {
  if (!Array.isArray(value) || !value.every(isTable)) {
    problems.push(`listener = ${show(value)}: must be tables: write each listener under its own [[listener]] header`);
    return [];
  }
  const out: ListenerConfig[] = [];
  const seen = new Map<string, number>();
  value.forEach((table, i) => {
    const item: Partial<ListenerConfig> = { role: 'mx', proxyProtocol: false };
    let isValid = true;
    for (const [key, v] of Object.entries(table)) {
      const spec = LISTENER_KEYS.find((k) => k.key === key);
      if (spec === undefined) {
        const near = closest(key, LISTENER_KEYS.map((k) => k.key));
        problems.push(`unknown key "listener[${i}].${key}"${near === undefined ? '' : ` (did you mean "listener[${i}].${near}"?)`}`);
        isValid = false;
        continue;
      }
      const checked = spec.check(v, `listener[${i}].${key}`);
      if (checked.ok) (item as Record<string, unknown>)[spec.field] = checked.value;
      else {
        problems.push(...checked.problems);
        isValid = false;
      }
    }
    if (item.address === undefined) {
      if (!('address' in table)) problems.push(`listener[${i}]: address must be set, e.g. address = "0.0.0.0:25"`);
      return;
    }
    const id = formatListen(item.address);
    const first = seen.get(id);
    if (first !== undefined) {
      problems.push(`listener[${i}].address = ${show(id)}: already the address of listener[${first}]`);
      return;
    }
    seen.set(id, i);
    if (isValid) out.push(item as ListenerConfig);
  });
  return out;
}

export const LISTENER_TABLES: ConfigTables = { name: 'listener', keys: LISTENER_KEYS, parse: parseListeners };
