// The [proxy] keys: which load balancers may send a PROXY protocol header, and how long they have.
// One entry per key, as in the other tables; the header itself is parsed in net/proxy.ts and read
// by the connection shell (server/connection.ts). Networks are validated by net/cidr.ts's rules.

import { parseCidr } from '../../net/cidr.ts';
import { fail, int, ok, stringList, type Validator } from '../validators.ts';
import { parseNetwork } from '../values.ts';
import { keyTable, type ConfigKey } from '../keys.ts';
import { defaultConfig } from '../types.ts';

const entry = keyTable(defaultConfig());

/** CIDR networks as relay.networks takes them; /0 is refused for its own reason. */
function proxyNetworks(): Validator<string[]> {
  return stringList({
    what: 'CIDR strings',
    example: '["10.0.0.5/32"]',
    allowed: 'IPv4 or IPv6 CIDR networks, prefix /1 or longer; a bare address means /32 or /128; `[]` for none',
    noun: 'a CIDR string',
    element(value, path) {
      const cidr = parseCidr(value);
      // Security: a trusted proxy chooses the client address every check sees; /0 lets anyone do so.
      if ('prefix' in cidr && cidr.prefix === 0) return fail(path, value, 'a /0 network would let every client on the Internet choose the address it is seen as');
      const parsed = parseNetwork(value);
      return typeof parsed === 'string' ? ok(parsed) : fail(path, value, parsed.problem);
    },
  });
}

export const PROXY_KEYS: readonly ConfigKey[] = [
  entry('proxy', 'trusted', 'trusted', proxyNetworks(),
    'The load balancers (HAProxy, a cloud TCP load balancer) that may send a PROXY protocol header (v1 or v2), ' +
    'when `smtp.proxy_protocol` is on. The header\'s source address then becomes the client\'s address for every ' +
    'check, log line, remembered verdict and the `Received:` header field; the proxy\'s own address is logged ' +
    'beside it. A connection from any other address is closed at once, without a greeting. List the proxies\' ' +
    'own addresses, as narrowly as you can: whoever is in this list can claim to be any client.'),
  entry('proxy', 'header_timeout_seconds', 'headerTimeoutSeconds', int(1, 60),
    'How long a trusted proxy has, after connecting, to send the whole PROXY header. Nothing is sent before it ' +
    '(no greeting); past it, or on a malformed header, the connection is closed.'),
];
