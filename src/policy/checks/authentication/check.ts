// Authentication results on accepted mail, at the content stage: DKIM (RFC 6376, one result per
// signature), ARC (RFC 8617) and DMARC (RFC 7489) verified by mailauth in the SPF worker thread
// (checks/spf/thread.ts) on the message's octets as the spool stores them (our trace fields, the
// message's header section with forged Authentication-Results renamed, the body), then one
// Authentication-Results field (RFC 8601) for spf, dkim, arc and dmarc under our authserv-id.
// Owns the mapping of results to that field and the DMARC enforcement decision (dmarc.enforce);
// never verifies anything itself, never refuses on DKIM or ARC alone, never refuses on a DNS
// failure (temperror is reported, the mail accepted), never checks relay clients (outbound mail),
// never names the domain or a DNS answer in a reply.

import { arValue, commentText, foldField, oneLine } from '../../../message/header-field.ts';
import type { DnsOptions } from '../../../dns/resolver.ts';
import type { HeaderEdit } from '../../../message/edits.ts';
import type { PolicyVerdict } from '../../../protocol/machine.ts';
import { REPLY } from '../../../protocol/replies.ts';
import type { Check, CheckContext } from '../../check.ts';
import { SPF_MAX_DNS_MECHANISMS, SPF_MAX_VOID_LOOKUPS, spfThreadFor } from '../spf/check.ts';
import type { MethodResult } from '../spf/thread.ts';
import type { DmarcQuarantineAction } from './config.ts';

export type AuthenticationOptions = {
  /** The DNS settings the thread builds its client from (the [dns] section). */
  dns: DnsOptions;
  /** Our name: the authserv-id (RFC 8601 2.2), as in Received and the SPF fields. */
  hostname: string;
  isArc: boolean;
  isDmarc: boolean;
  /** dmarc.enforce: refuse a fail under p=reject. */
  isEnforcing: boolean;
  quarantineAction: DmarcQuarantineAction;
  /** Budget for one message (every lookup); running out reports temperror and accepts. */
  timeoutMs: number;
  /** The SPF check runs (its result is read from our field), else SPF is evaluated for DMARC here. */
  isSpfChecked: boolean;
  /** [0, 1): which failing messages a pct below 100 spares (RFC 7489 6.6.4); injected for tests. */
  random?: () => number;
};

/** One resinfo of the field (RFC 8601 2.2): method=result (comment) ptype.property=value ... */
export type ResInfo = { method: string; result: string; comment: string; props: readonly (readonly [string, string])[] };

export function formatResInfo(r: ResInfo): string {
  const parts = [`${r.method}=${arValue(r.result)}`];
  if (r.comment !== '') parts.push(`(${commentText(r.comment)})`);
  // RFC 8601 2.2 pvalue: an [local-part] "@" domain-name (header.i) needs no quotes.
  for (const [name, value] of r.props) parts.push(`${name}=${/^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]*@[A-Za-z0-9.-]+$/.test(value) && value.length <= 300 ? value : arValue(value)}`);
  return parts.join(' ');
}

/** The field, without final CRLF: each resinfo on its own line, each line folded (RFC 5322 2.2.3). */
export function formatAuthResults(authservId: string, results: readonly ResInfo[]): string {
  const head = `Authentication-Results: ${arValue(authservId)}`;
  if (results.length === 0) return `${head}; none`;
  // foldField keeps no CR/LF but its folds: each resinfo starts a continuation line.
  return [`${head};`, ...results.map((r, i) => ` ${foldField(formatResInfo(r) + (i < results.length - 1 ? ';' : ''))}`)].join('\r\n');
}

/** Our SPF Authentication-Results field (the SPF check's, `spf.header = "authentication-results"`): result and domain. */
function spfFromField(field: string): { result: string; domain: string; resinfo: string } | null {
  const m = /^Authentication-Results:[^;]*;\s*(spf=([a-z]+)(?:\s+smtp\.(?:mailfrom|helo)=([^\s;]+))?)/i.exec(field.replace(/\r\n(?=[ \t])/g, ''));
  if (m === null) return null;
  return { result: m[2].toLowerCase(), domain: (m[3] ?? '').replace(/^"|"$/g, '').toLowerCase(), resinfo: m[1] };
}

/** The Received-SPF field (RFC 7208 9.1): result, and the MAIL FROM domain when that was the identity. */
function spfFromReceivedSpf(field: string): { result: string; domain: string } | null {
  const text = field.replace(/\r\n(?=[ \t])/g, '');
  const m = /^Received-SPF:\s*([a-z]+)/i.exec(text);
  if (m === null) return null;
  const from = /envelope-from="?[^@"\s;]*@([^"\s;]+)"?;/i.exec(text);
  return { result: m[1].toLowerCase(), domain: from?.[1]?.toLowerCase() ?? '' };
}

/** How long past its deadline a thread's answer is waited for (it answers at once at the deadline). */
const THREAD_SLACK_MS = 2_000;

export function authenticationCheck(opts: AuthenticationOptions): Check {
  const random = opts.random ?? Math.random;
  const thread = spfThreadFor(opts.dns);
  const timedOut = (): PolicyVerdict => ({ action: 'continue', edits: { headers: fieldEdits(opts, [], [
    { method: 'dkim', result: 'temperror', comment: 'verification timed out', props: [] },
    ...(opts.isDmarc ? [{ method: 'dmarc', result: 'temperror', comment: 'verification timed out', props: [] }] : []),
  ], null) } });
  return {
    name: 'authentication',
    stages: ['content'],
    // The thread stops its lookups at opts.timeoutMs and answers with temperror results, which
    // become the one field as usual; the pipeline's own budget (its static verdict, which cannot
    // merge the SPF check's field) is only for a thread that does not answer at all.
    timeoutMs: opts.timeoutMs + THREAD_SLACK_MS,
    onTimeout: timedOut(),
    run: async (ctx, signal) => {
      // Security: relay clients send outbound mail; it is ours to sign, not to judge.
      if (ctx.session.isRelayClient || ctx.message === null) return { action: 'continue' };
      const message = ctx.message;
      // The octets as stored: the fields as they are, the empty line, the body (in memory or its file).
      const header = Buffer.from(message.fields.map((f) => `${f.raw}\r\n`).join('') + '\r\n', 'latin1');
      const chunks: Buffer[] = [header];
      let total = header.length;
      for await (const c of message.body()) {
        chunks.push(c);
        total += c.length;
      }
      // One buffer of its own (not a pooled slice), moved to the thread without a copy.
      const octets = new Uint8Array(total);
      let at = 0;
      for (const c of chunks) {
        octets.set(c, at);
        at += c.length;
      }
      const added = ctx.transaction?.addedHeaders ?? [];
      const ourSpf = added.map(spfFromField).find((s) => s !== null) ?? null;
      const known = ourSpf ?? added.map(spfFromReceivedSpf).find((s) => s !== null) ?? null;
      const spf = known !== null ? { result: known.result, domain: known.domain } : opts.isSpfChecked ? null : spfRequest(opts, ctx);
      const res = await thread.authenticate(
        { kind: 'auth', message: octets, isArc: opts.isArc, isDmarc: opts.isDmarc, spf, deadlineMs: Date.now() + opts.timeoutMs },
        signal,
      );
      if ('error' in res) {
        const temp = (method: string): ResInfo => ({ method, result: 'temperror', comment: oneLine(res.error, 100), props: [] });
        return { action: 'continue', edits: { headers: fieldEdits(opts, added, [temp('dkim'), ...(opts.isDmarc ? [temp('dmarc')] : [])], ourSpf?.resinfo ?? null) } };
      }
      const results: ResInfo[] = [];
      // A spf result evaluated here (the SPF check off) is reported too; the SPF check's own is its field's.
      if (ourSpf === null && known !== null) results.push({ method: 'spf', result: known.result, comment: '', props: known.domain !== '' ? [['smtp.mailfrom', known.domain]] : [] });
      else if (ourSpf === null && res.spf !== null) results.push({ method: 'spf', result: res.spf.result, comment: '', props: res.spf.domain !== '' ? [['smtp.mailfrom', res.spf.domain]] : [] });
      for (const d of res.dkim) results.push({ method: 'dkim', ...dkimResult(d) });
      if (res.arc !== null) results.push({ method: 'arc', ...res.arc });
      if (res.dmarc !== null) results.push({ method: 'dmarc', ...res.dmarc });
      const edits = { headers: fieldEdits(opts, added, results, ourSpf?.resinfo ?? null) };
      const dmarc = res.dmarc;
      if (opts.isEnforcing && dmarc !== null && dmarc.result === 'fail') {
        const action = enforcedAction(dmarc.policy, dmarc.pct, opts.quarantineAction, random);
        const from = dmarc.props.find(([p]) => p === 'header.from')?.[1] ?? '';
        const reason = `dmarc fail for ${oneLine(from, 255) || '(no domain)'} under p=${oneLine(dmarc.policy, 20) || 'none'}${dmarc.pct !== null ? ` pct=${dmarc.pct}` : ''}`;
        if (action === 'reject') return { action: 'reject', reply: REPLY.dmarcRejected, check: 'authentication', reason };
        if (action === 'quarantine') return { action: 'continue', edits: { ...edits, quarantine: 'dmarc' } };
      }
      return { action: 'continue', edits };
    },
  };
}

/** What SPF is evaluated from when the SPF check does not run (RFC 7208 2.4: postmaster@HELO for <>). */
function spfRequest(opts: AuthenticationOptions, ctx: CheckContext) {
  const rp = ctx.transaction?.reversePath ?? null;
  const helo = ctx.session.helo?.name ?? undefined;
  const sender = rp !== null ? `${rp.localPart}@${rp.domain}` : `postmaster@${helo ?? 'unknown'}`;
  const ip = ctx.session.peer.address.replace(/^::ffff:(?=\d+\.)/i, '');
  return { sender, ip, helo, mta: opts.hostname, maxResolveCount: SPF_MAX_DNS_MECHANISMS, maxVoidCount: SPF_MAX_VOID_LOOKUPS };
}

/**
 * RFC 6376 6.1.3: a body hash that does not match is a verification failure (PERMFAIL), which
 * RFC 8601 2.7.1 reports as "fail"; mailauth calls it neutral.
 */
function dkimResult(d: MethodResult): MethodResult {
  if (d.result === 'neutral' && d.comment === 'body hash did not verify') return { ...d, result: 'fail' };
  return d;
}

/**
 * RFC 7489 6.6.4: the policy applies to pct percent of failing messages; the others get the next
 * lower one (reject -> quarantine, quarantine -> none). mailauth reports the policy in force
 * (sp= for a subdomain when published) and pct as published.
 */
export function enforcedAction(policy: string, pct: number | null, quarantineAction: DmarcQuarantineAction, random: () => number): 'continue' | 'quarantine' | 'reject' {
  let p = policy.toLowerCase();
  const share = pct === null || !(pct >= 0 && pct <= 100) ? 100 : pct;
  if (share < 100 && random() * 100 >= share) p = p === 'reject' ? 'quarantine' : 'none';
  if (p === 'reject') return 'reject';
  if (p === 'quarantine') return quarantineAction;
  return 'continue';
}

/**
 * The edits that leave one Authentication-Results field of ours: the SPF check's own field (ours
 * among the added fields) deleted, and one field with its spf resinfo first, then `results`.
 * Forged fields under our name were renamed when the message was prepared (message/auth-results.ts).
 */
function fieldEdits(opts: AuthenticationOptions, added: readonly string[], results: readonly ResInfo[], spfResinfo: string | null): HeaderEdit[] {
  const edits: HeaderEdit[] = [];
  let all = results;
  if (spfResinfo !== null) {
    // Ours are the first fields of the message: the SPF check's is the first Authentication-Results.
    const m = /^spf=(\S+)(?:\s+(\S+)=(\S+))?/.exec(spfResinfo);
    all = [{ method: 'spf', result: m?.[1] ?? 'none', comment: '', props: m?.[2] !== undefined ? [[m[2], (m[3] ?? '').replace(/^"|"$/g, '')]] : [] }, ...results];
    if (added.some((f) => /^Authentication-Results:/i.test(f))) edits.push({ op: 'delete', name: 'Authentication-Results', index: 1 });
  }
  edits.push({ op: 'add', field: formatAuthResults(opts.hostname, all) });
  return edits;
}
