// The milter check: the session's conversation with each configured filter, in chain order, at
// every stage (connect, HELO, MAIL, each RCPT, and the assembled message at the content stage),
// one filter connection per SMTP session (closed when the session is: sessionClosed). A filter's
// replies become verdicts (a refusal at RCPT refuses that recipient only), its end-of-message
// modifications become the content stage's edits (applied in one place, message/assemble.ts),
// and a filter that fails gets its on_failure. Mapping table: docs/filters.md "Milter".
// Never lets a filter's text reach the client unchecked (filters/milter/reply.ts).

import type { Logger } from 'pino';
import { MilterConversation, type ContentOutcome, type Modification, type Outcome, type SessionFacts, type TransactionFacts } from '../../../filters/milter/conversation.ts';
import { formatAddress, type MilterAddress } from '../../../filters/milter/client.ts';
import { PROTO } from '../../../filters/milter/codec.ts';
import { parseFilterReply } from '../../../filters/milter/reply.ts';
import { oneLine } from '../../../message/header-field.ts';
import { mergeEdits, type HeaderEdit, type MessageEdits, type RecipientEdit } from '../../../message/edits.ts';
import { formatMailbox } from '../../../protocol/address.ts';
import { REPLY, type Reply } from '../../../protocol/replies.ts';
import { queueIdFor, type TransactionView } from '../../../protocol/session.ts';
import type { PolicyVerdict } from '../../../protocol/verdict.ts';
import type { Check, CheckContext } from '../../check.ts';

export type MilterCheckSpec = {
  readonly address: MilterAddress;
  readonly onFailure: 'tempfail' | 'accept';
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
};

export type MilterCheckOptions = {
  readonly milters: readonly MilterCheckSpec[];
  /** Our name: macro j. */
  readonly hostname: string;
  /** Largest replacement body a filter may send. */
  readonly maxBodyBytes: number;
  readonly log: Logger;
  /** One stage's budget across the chain (default 100 s, under the connection's 120 s action limit). */
  readonly stageBudgetMs?: number;
};

const STAGE_BUDGET_MS = 100_000;
/** Sessions whose conversations are held; past it the oldest is closed (sessionClosed missed). */
const MAX_SESSIONS = 20_000;
const CONTINUE: PolicyVerdict = { action: 'continue' };
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]{1,200}$/;

export function milterCheck(opts: MilterCheckOptions): Check {
  const budget = opts.stageBudgetMs ?? STAGE_BUDGET_MS;
  const sessions = new Map<string, MilterConversation[]>();
  /** Failures already logged, per session and filter, so a dead filter logs once per session. */
  const logged = new Map<string, Set<number>>();
  const names = opts.milters.map((m) => formatAddress(m.address));

  const conversations = (sessionId: string): MilterConversation[] => {
    let list = sessions.get(sessionId);
    if (list === undefined) {
      if (sessions.size >= MAX_SESSIONS) {
        const [oldest, convs] = sessions.entries().next().value!;
        for (const c of convs) c.close();
        sessions.delete(oldest);
        logged.delete(oldest);
      }
      list = opts.milters.map((m) => new MilterConversation({ address: m.address, connectTimeoutMs: m.connectTimeoutMs, commandTimeoutMs: m.commandTimeoutMs, maxBodyBytes: opts.maxBodyBytes }));
      sessions.set(sessionId, list);
    }
    return list;
  };

  const refusal = (ctx: CheckContext, i: number, o: Outcome & { kind: 'reject' | 'tempfail' }): PolicyVerdict => {
    let r: Reply | null = null;
    if (o.replyText !== null) {
      const parsed = parseFilterReply(o.replyText);
      if (typeof parsed === 'string') opts.log.warn({ sid: ctx.session.id, milter: names[i], stage: ctx.stage, reason: parsed }, 'milter reply code not usable; using the default reply');
      else r = parsed;
    }
    const kind = r === null ? o.kind : r.code >= 500 ? 'reject' : 'tempfail';
    if (ctx.stage === 'connect') {
      // A greeting refusal is 554 or 421 (RFC 5321 3.1); the filter's text is kept.
      const base = kind === 'reject' ? REPLY.milterRejectedAtConnect : REPLY.milterTempfailedAtConnect;
      r = r === null ? base : { ...r, code: base.code, enhanced: base.enhanced };
    }
    r ??= kind === 'reject' ? REPLY.milterRejected : REPLY.milterTempfailed;
    return { action: kind, reply: r, check: 'milter', reason: `milter ${names[i]}: ${kind}${o.replyText !== null ? ` (${oneLine(o.replyText, 200)})` : ''}` };
  };

  /** A failed filter: its on_failure. `null`: go on without it. */
  const failed = (ctx: CheckContext, i: number, reason: string, isFirst: boolean): PolicyVerdict | null => {
    const m = opts.milters[i];
    if (isFirst) opts.log.warn({ sid: ctx.session.id, milter: names[i], stage: ctx.stage, reason, onFailure: m.onFailure }, 'milter failed');
    if (m.onFailure === 'accept') return null;
    // Connect and HELO go on (the client learns nothing yet); every transaction is then refused.
    if (ctx.stage === 'connect' || ctx.stage === 'helo') return null;
    return { action: 'tempfail', reply: REPLY.milterUnavailable, check: 'milter', reason: `milter ${names[i]} failed: ${reason}` };
  };

  const firstFailure = (sessionId: string, i: number): boolean => {
    let set = logged.get(sessionId);
    if (set === undefined) logged.set(sessionId, (set = new Set()));
    if (set.has(i)) return false;
    set.add(i);
    return true;
  };

  const run = async (ctx: CheckContext): Promise<PolicyVerdict> => {
    const deadline = Date.now() + budget;
    const convs = conversations(ctx.session.id);
    const facts = sessionFacts(ctx, opts.hostname);
    const txn = ctx.transaction === null ? null : transactionFacts(ctx.session.id, ctx.transaction);
    const edits: MessageEdits[] = [];
    for (let i = 0; i < convs.length; i++) {
      const c = convs[i];
      let outcome: ContentOutcome;
      switch (ctx.stage) {
        case 'connect':
          outcome = await c.connect(facts, deadline);
          break;
        case 'helo':
          outcome = await c.helo({ ...facts, heloName: ctx.heloName }, deadline);
          break;
        case 'mail':
          outcome = txn === null ? { kind: 'continue' } : await c.mail(facts, txn, deadline);
          break;
        case 'rcpt':
          outcome = txn === null || ctx.recipient === null ? { kind: 'continue' } : await c.rcpt(facts, txn, rcptArgs(ctx.recipient), deadline);
          break;
        case 'content': {
          const message = ctx.message;
          if (txn === null || message === null || ctx.transaction === null) {
            outcome = { kind: 'continue' };
            break;
          }
          const fields = message.fields.map((f) => ({ name: f.name, value: f.raw.slice(f.raw.indexOf(':') + 1) }));
          outcome = await c.content(facts, txn, ctx.transaction.recipients.map(rcptArgs), fields, () => message.body(), deadline);
          break;
        }
        default:
          outcome = { kind: 'continue' };
      }
      switch (outcome.kind) {
        case 'continue':
        case 'accept':
          if (outcome.modifications !== undefined) edits.push(toEdits(outcome.modifications, (c.negotiated.protocol & PROTO.headerLeadingSpace) !== 0, ctx, names[i], opts.log));
          continue;
        case 'discard':
          if (ctx.stage !== 'content') continue;
          opts.log.info({ sid: ctx.session.id, milter: names[i] }, 'milter discarded the message');
          return { action: 'continue', edits: { discard: true } };
        case 'reject':
        case 'tempfail':
          return refusal(ctx, i, outcome);
        case 'failed': {
          const v = failed(ctx, i, outcome.reason, firstFailure(ctx.session.id, i));
          if (v !== null) return v;
          continue;
        }
      }
    }
    if (edits.length === 0) return CONTINUE;
    return { action: 'continue', edits: mergeEdits(edits) };
  };

  return {
    name: 'milter',
    stages: ['connect', 'helo', 'mail', 'rcpt', 'content'],
    // The stage's own budget (above) answers first; this is the pipeline's backstop.
    timeoutMs: budget + 5_000,
    onTimeout: { action: 'tempfail', reply: REPLY.milterUnavailable, check: 'milter', reason: 'milter chain timed out' },
    key(ctx) {
      // A filter decides each command afresh: nothing it refused is inherited by the next one (a
      // refused MAIL does not use up its transaction number, so the command count tells them apart).
      const seq = ctx.transaction?.seq ?? 0;
      const n = ctx.session.counters.commands;
      if (ctx.stage === 'mail') return `mail:${seq}:${n}`;
      if (ctx.stage === 'rcpt') return `rcpt:${seq}:${n}`;
      if (ctx.stage === 'helo') return `helo:${ctx.heloName ?? ''}`;
      if (ctx.stage === 'content') return `message:${seq}`;
      return '';
    },
    run,
    sessionClosed(sessionId) {
      const convs = sessions.get(sessionId);
      sessions.delete(sessionId);
      logged.delete(sessionId);
      for (const c of convs ?? []) c.close();
    },
  };
}

function sessionFacts(ctx: CheckContext, hostname: string): SessionFacts {
  const s = ctx.session;
  return {
    hostname,
    daemonName: 'portcullis',
    client: { address: s.peer.address, port: s.peer.port, name: null },
    local: { address: s.local.address, port: s.local.port },
    heloName: s.helo?.name ?? null,
    tls: s.tls,
    auth: s.auth,
  };
}

function transactionFacts(sessionId: string, t: TransactionView): TransactionFacts {
  const sender = t.reversePath === null ? '' : formatMailbox(t.reversePath);
  const args = [`<${sender}>`];
  if (t.body !== '7BIT') args.push(`BODY=${t.body}`);
  if (t.smtputf8) args.push('SMTPUTF8');
  if (t.declaredSize !== null) args.push(`SIZE=${t.declaredSize}`);
  if (t.ret !== undefined) args.push(`RET=${t.ret}`);
  if (t.envid !== undefined) args.push(`ENVID=${t.envid}`);
  return { seq: t.seq, queueId: queueIdFor(sessionId, t.seq), mailArgs: args, sender };
}

function rcptArgs(r: { readonly address: string; readonly notify?: 'NEVER' | readonly string[] }): string[] {
  const args = [`<${r.address}>`];
  if (r.notify !== undefined) args.push(`NOTIFY=${r.notify === 'NEVER' ? 'NEVER' : r.notify.join(',')}`);
  return args;
}

/** A filter's end-of-message modifications as the content stage's edits, in the order it sent them. */
export function toEdits(mods: readonly Modification[], hasLeadingSpace: boolean, ctx: CheckContext, milter: string, log: Logger): MessageEdits {
  const headers: HeaderEdit[] = [];
  const recipients: RecipientEdit[] = [];
  let quarantine: string | undefined;
  let sender: string | undefined;
  let body: Buffer[] | undefined;
  const field = (name: string, value: string): string | null => {
    if (!FIELD_NAME.test(name)) {
      log.warn({ sid: ctx.session.id, milter, name: oneLine(name, 100) }, 'milter header name is not a field name; ignored');
      return null;
    }
    return `${name}:${hasLeadingSpace ? '' : ' '}${value}`;
  };
  for (const m of mods) {
    switch (m.kind) {
      case 'addheader': {
        const f = field(m.name, m.value);
        if (f !== null) headers.push({ op: 'insert', index: Number.MAX_SAFE_INTEGER, field: f });
        break;
      }
      case 'insheader': {
        const f = field(m.name, m.value);
        if (f !== null) headers.push({ op: 'insert', index: m.index, field: f });
        break;
      }
      case 'chgheader': {
        if (field(m.name, '') === null) break;
        const index = Math.max(1, m.index);
        // An empty value deletes the field (smfi_chgheader).
        if (m.value === '') headers.push({ op: 'delete', name: m.name, index });
        else headers.push({ op: 'change', name: m.name, index, value: hasLeadingSpace ? m.value.replace(/^[ \t]/, '') : m.value });
        break;
      }
      case 'chgfrom':
        sender = stripBrackets(m.sender);
        break;
      case 'addrcpt':
        recipients.push({ op: 'add', address: stripBrackets(m.recipient) });
        break;
      case 'delrcpt':
        recipients.push({ op: 'delete', address: stripBrackets(m.recipient) });
        break;
      case 'quarantine':
        quarantine ??= oneLine(m.reason, 200) || 'milter';
        break;
      case 'replbody':
        body = [m.body];
        break;
    }
  }
  return {
    ...(headers.length > 0 ? { headers } : {}),
    ...(recipients.length > 0 ? { recipients } : {}),
    ...(quarantine !== undefined ? { quarantine } : {}),
    ...(sender !== undefined ? { sender } : {}),
    ...(body !== undefined ? { body } : {}),
  };
}

function stripBrackets(address: string): string {
  return address.trim().replace(/^<(.*)>$/, '$1');
}

