// HELO/EHLO name checks, each an option and all off by default: broken clients and proxies send
// bare words and unresolvable names, and RFC 5321 4.1.4 forbids refusing mail only because the
// name does not match the client's address. What an operator may turn on:
// - require_fqdn: the name must be a fully-qualified domain name or a valid address literal;
// - require_resolvable: a domain name must have an A, AAAA or MX record (a DNS failure tempfails);
// - reject_our_name: a client may not announce our own host name, a local domain, or our address.
// Runs at the helo stage on the name being announced; the verdict is keyed by that name, so the
// same name sent again in the session gets the same answer without another lookup.

import { isFqdn } from '../../../net/domain.ts';
import { canonicalIp, ipFamily } from '../../../net/ip.ts';
import type { DnsClient } from '../../../dns/resolver.ts';
import { NO_RECORD_CODES } from '../../../dns/resolver.ts';
import type { PolicyVerdict } from '../../../protocol/machine.ts';
import { REPLY, type Reply } from '../../../protocol/replies.ts';
import type { Check, CheckContext } from '../../check.ts';

export type HeloOptions = {
  requireFqdn: boolean;
  requireResolvable: boolean;
  rejectOurName: boolean;
  /** Our smtp.hostname and the local domains (any case). */
  ourNames: readonly string[];
  dns: DnsClient;
  /** Budget for the lookups of one name. */
  timeoutMs: number;
};

/** "[192.0.2.1]" / "[IPv6:2001:db8::1]" -> the address; null when `name` is no address literal. */
function literalAddress(name: string): string | null {
  const m = /^\[(?:IPv6:)?([^\]]+)\]$/i.exec(name);
  if (m === null) return null;
  const isV6Tagged = /^\[IPv6:/i.test(name);
  const family = ipFamily(m[1]);
  if (isV6Tagged && family === 6) return canonicalIp(m[1]);
  return !isV6Tagged && family === 4 ? m[1] : null;
}

export function heloCheck(opts: HeloOptions): Check {
  const ourNames = new Set(opts.ourNames.map((n) => n.toLowerCase()));
  const refuse = (r: Reply, reason: string): PolicyVerdict => ({
    action: r.code >= 500 ? 'reject' : 'tempfail',
    reply: r,
    check: 'helo',
    reason,
  });
  /** 'yes' | 'no' | 'unknown' (every lookup failed for another reason than "no such record"). */
  const resolves = async (name: string, signal: AbortSignal): Promise<'yes' | 'no' | 'unknown'> => {
    const answers = await Promise.all(
      ['A', 'AAAA', 'MX'].map((rr) =>
        opts.dns.resolve(name, rr).then(
          (records) => (Array.isArray(records) && records.length > 0 ? 'yes' : 'no'),
          (err: NodeJS.ErrnoException) => (NO_RECORD_CODES.has(err.code ?? '') ? 'no' : 'unknown'),
        ),
      ),
    );
    if (signal.aborted) return 'unknown';
    if (answers.includes('yes')) return 'yes';
    return answers.includes('unknown') ? 'unknown' : 'no';
  };
  return {
    name: 'helo',
    stages: ['helo'],
    timeoutMs: opts.timeoutMs,
    onTimeout: refuse(REPLY.heloLookupFailed, 'HELO name lookup timed out'),
    key: (ctx: CheckContext) => (ctx.heloName ?? '').toLowerCase(),
    run: async (ctx, signal) => {
      const name = ctx.heloName ?? '';
      const literal = literalAddress(name);
      if (opts.rejectOurName) {
        const bare = name.toLowerCase().replace(/\.$/, '');
        if (ourNames.has(bare)) return refuse(REPLY.heloOurName, `announced our name ${bare}`);
        if (literal !== null && literal === canonicalIp(ctx.session.local.address) && literal !== canonicalIp(ctx.session.peer.address)) {
          return refuse(REPLY.heloOurName, `announced our address ${literal}`);
        }
      }
      if (literal !== null) return { action: 'continue' };
      if (opts.requireFqdn && !isFqdn(name)) return refuse(REPLY.heloNotFqdn, `not a fully-qualified domain name: ${JSON.stringify(name).slice(0, 80)}`);
      if (opts.requireResolvable) {
        if (!isFqdn(name)) return refuse(REPLY.heloUnresolvable, `not a domain name: ${JSON.stringify(name).slice(0, 80)}`);
        const found = await resolves(name, signal);
        if (found === 'no') return refuse(REPLY.heloUnresolvable, `${name} has no A, AAAA or MX record`);
        if (found === 'unknown') return refuse(REPLY.heloLookupFailed, `lookups of ${name} failed`);
      }
      return { action: 'continue' };
    },
  };
}
