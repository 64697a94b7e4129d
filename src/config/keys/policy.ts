// The keys the policy engine shares: local domains, relay networks, verdict memory, the order of the checks, DNS.
// One entry per key: its validator, its default (the embedded one) and its documentation.

import { POLICY_CHECK_NAMES } from '../../policy/registry.ts';
import { int } from '../validators.ts';
import { checkList, dnsServers, domainList, networkList } from '../values.ts';
import { keyTable, type ConfigKey } from '../keys.ts';
import { defaultConfig } from '../types.ts';

const entry = keyTable(defaultConfig());

export const POLICY_KEYS: readonly ConfigKey[] = [
  entry('domains', 'local', 'local', domainList(),
    'Domains this server accepts mail for, from any client. Lowercased on load and duplicates dropped; write ' +
    'internationalised names in their `xn--` form, without a trailing dot. `[]` accepts mail for no domain.'),

  entry('relay', 'networks', 'networks', networkList(),
    'Client networks allowed to relay, that is to send mail to domains not in `domains.local`. Each entry is a ' +
    'CIDR network such as `"192.0.2.0/24"` or `"2001:db8::/32"`; a bare address means that one host (`/32` or ' +
    '`/128`) and is stored in that form. Host bits must be clear, and `/0` is refused because it makes an open ' +
    'relay. `[]` lets nobody relay.'),

  entry('verdicts', 'max_refusals_per_session', 'maxRefusalsPerSession', int(1, 100),
    'Policy refusals (tempfail, reject) in one session after which the session ends with `421 4.7.0`. Refusals ' +
    'belong to the session: RSET and new transactions do not clear them.'),
  entry('verdicts', 'ipv4_prefix', 'ipv4Prefix', int(8, 32),
    'The IPv4 network a policy refusal with a TTL is remembered for across sessions: `24` means a refusal of ' +
    '192.0.2.7 also answers 192.0.2.99 until it expires (senders rotate addresses within their network); `32` ' +
    'remembers it for the one address. Checks whose verdict is about one address (DNS lists) always use /32.'),
  entry('verdicts', 'ipv6_prefix', 'ipv6Prefix', int(16, 128),
    'The IPv6 network a policy refusal with a TTL is remembered for (`64`: one customer network). DNS lists ' +
    'always use /128.'),

  entry('policy', 'checks', 'checks', checkList(POLICY_CHECK_NAMES),
    'The policy checks, in the order they run at each stage (connect, HELO, MAIL, each RCPT, end of data). A ' +
    'check runs when it is listed here and configured in its own section (`recipients.table` set, `helo` options ' +
    'on, `[[dnsbl]]` tables present, `spf.enabled`, `greylist.enabled`, `batv.domains` set); leaving a name out turns the check off. ' +
    'Relay control (`relay.networks`) always runs first, at RCPT. The first refusal ends a stage; a DNS allow list ' +
    'that accepts skips the checks after it at that stage. See docs/policy.md.'),

  entry('dns', 'servers', 'servers', dnsServers(),
    'The DNS servers the policy checks ask (DNS lists, SPF, HELO names). `[]` uses the system resolver ' +
    '(/etc/resolv.conf). Use a local caching resolver: public resolvers are refused by most DNS lists.'),
  entry('dns', 'timeout_ms', 'timeoutMs', int(100, 30_000),
    'How long the first try of a DNS query waits for an answer; each further try waits twice as long ' +
    '(the resolver library\'s schedule), so an unanswered query gives up after about `timeout_ms` × 2^`tries`. ' +
    'That product may be at most 30000 (30 s), so every check answers well within the session\'s 120 s limit.'),
  entry('dns', 'tries', 'tries', int(1, 5),
    'How many times a DNS query is sent before it counts as unanswered (see `dns.timeout_ms`).'),
];
