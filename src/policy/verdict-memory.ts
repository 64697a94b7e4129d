// Verdict memory across sessions, as the state store holds it: the one key format of a remembered
// refusal, the stored value, and the operator's view of them (`portcullis verdicts list` and
// `forget`). The pipeline writes and reads these records; nothing else writes them.
//
// Key: v1:verdict:<check>:<stage>:<client network>:<check's key>, e.g.
//   v1:verdict:dnsbl:connect:192.0.2.7/32:            (a DNS list names one host)
//   v1:verdict:dnsbl:rcpt:2001:db8:1:2::/64:<key>     (an IPv6 network holds colons: the network
//                                                     is everything up to the first "/<digits>:")
// Value: JSON { action, reply, reason, at } (at: when it was stored, ms; absent in older records).

import { ipFamily } from '../net/ip.ts';
import { networkBase, parseCidr } from '../net/cidr.ts';
import type { Reply } from '../protocol/replies.ts';
import type { StateStore } from '../store/store.ts';

export const VERDICT_KEY_PREFIX = 'v1:verdict:';

/** What the store keeps for one remembered refusal. */
export type StoredVerdict = { action: 'tempfail' | 'reject' | 'disconnect'; reply: Reply; reason: string; at?: number };

/** The most records an operator command reads: far more than a node remembers in practice. */
export const MAX_LISTED_VERDICTS = 100_000;

export function verdictStoreKey(check: string, stage: string, network: string, key: string): string {
  return `${VERDICT_KEY_PREFIX}${check}:${stage}:${network}:${key}`;
}

export type ParsedVerdictKey = { check: string; stage: string; network: string; key: string };

const KEY_PATTERN = /^v1:verdict:([^:]+):([^:]+):(.+?\/\d{1,3}):(.*)$/s;

/** The parts of a verdict key, or null for a key of another shape. */
export function parseVerdictKey(storeKey: string): ParsedVerdictKey | null {
  const m = KEY_PATTERN.exec(storeKey);
  if (m === null) return null;
  return { check: m[1]!, stage: m[2]!, network: m[3]!, key: m[4]! };
}

export type RememberedVerdict = ParsedVerdictKey & {
  action: string;
  reply: string;
  reason: string;
  /** When it was stored (ms since the epoch), if the record says. */
  atMs: number | null;
  /** When it is forgotten by itself (the TTL's end). */
  untilMs: number;
  storeKey: string;
};

/** A NETWORK or ADDRESS as the operator writes it: "192.0.2.0/24", "192.0.2.7", "2001:db8::/32". */
export type VerdictTarget = { family: 4 | 6; address: string; prefix: number };

/** The target, or an error text naming what is wrong. */
export function parseVerdictTarget(text: string): VerdictTarget | string {
  const parsed = parseCidr(text.trim());
  if ('kind' in parsed) {
    if (parsed.kind === 'host-bits') return `${text} has host bits set: did you mean ${parsed.network}/${parsed.prefix}?`;
    if (parsed.kind === 'bad-prefix') return `${text}: the prefix must be 0 to ${parsed.maxPrefix}`;
    return `${text} is not an IP address or network`;
  }
  return parsed;
}

/** Whether a remembered network and the target share an address (one holds the other). */
export function overlaps(network: string, target: VerdictTarget): boolean {
  const slash = network.lastIndexOf('/');
  const address = network.slice(0, slash);
  const prefix = Number(network.slice(slash + 1));
  if (ipFamily(address) !== target.family || !Number.isInteger(prefix)) return false;
  const common = Math.min(prefix, target.prefix);
  return networkBase(address, common) === networkBase(target.address, common);
}

function decode(storeKey: string, value: string, expiresAtMs: number): RememberedVerdict | null {
  const key = parseVerdictKey(storeKey);
  if (key === null) return null;
  let v: Partial<StoredVerdict>;
  try {
    v = JSON.parse(value) as Partial<StoredVerdict>;
  } catch {
    v = {};
  }
  const reply = v.reply === undefined ? '' : `${v.reply.code} ${v.reply.enhanced == null ? '' : `${v.reply.enhanced} `}${(v.reply.lines ?? []).join(' / ')}`.trim();
  return { ...key, action: String(v.action ?? '?'), reply, reason: String(v.reason ?? ''), atMs: typeof v.at === 'number' ? v.at : null, untilMs: expiresAtMs, storeKey };
}

/** What the store remembers, for every client or for those overlapping `target`; oldest first. */
export async function listVerdicts(store: StateStore, target: VerdictTarget | null): Promise<RememberedVerdict[]> {
  const entries = await store.scan(VERDICT_KEY_PREFIX, MAX_LISTED_VERDICTS);
  const out: RememberedVerdict[] = [];
  for (const e of entries) {
    const v = decode(e.key, e.value, e.expiresAtMs);
    if (v !== null && (target === null || overlaps(v.network, target))) out.push(v);
  }
  return out.sort((a, b) => (a.atMs ?? 0) - (b.atMs ?? 0) || a.storeKey.localeCompare(b.storeKey));
}

/** Deletes every remembered refusal overlapping `target`; returns what it deleted. */
export async function forgetVerdicts(store: StateStore, target: VerdictTarget): Promise<RememberedVerdict[]> {
  const found = await listVerdicts(store, target);
  for (const v of found) await store.delete(v.storeKey);
  return found;
}
