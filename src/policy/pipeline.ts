// Runs the configured checks of a stage in order, each within its time budget, and remembers
// refusals for the session: a later transaction that reaches the same check with the same key
// gets the remembered refusal (at least as strict), whatever RSET or a new MAIL did in between.
// Never lets a check's exception or slowness escape: a throw is our bug (tempfail, logged), a
// timeout is the check's defined verdict.

import type { Logger } from 'pino';
import type { Output, PolicyVerdict } from '../protocol/machine.ts';
import { REPLY, type Reply } from '../protocol/replies.ts';
import type { PolicyStage } from '../protocol/session.ts';
import { contentMessage, type SpilledBodyReader } from '../message/content.ts';
import type { MessageEdits } from '../message/edits.ts';
import type { StateStore } from '../store/store.ts';
import { BoundedCache } from '../util/bounded-cache.ts';
import type { Check, CheckContext } from './check.ts';
import { clientNetwork, DEFAULT_PREFIXES, HOST_PREFIXES, type NetworkPrefixes } from './network.ts';

type PolicyRequest = Extract<Output, { type: 'policy' }>;

export type PipelineOptions = {
  log: Logger;
  defaultTimeoutMs: number;
  now?: () => number;
  /** Called for every decided verdict (metrics). */
  onVerdict?: (check: string, stage: PolicyStage, action: string) => void;
  /** Shared state: refusals with a TTL are kept here by client network, so reconnecting (to any
   *  node sharing the store) does not launder them either. */
  store?: StateStore | null;
  /** The client network a stored refusal covers (verdicts.ipv4_prefix / ipv6_prefix). */
  prefixes?: NetworkPrefixes;
};

type StoredVerdict = { action: 'tempfail' | 'reject' | 'disconnect'; reply: Reply; reason: string };

/**
 * How long this process trusts what it last read from (or wrote to) the shared store for one key,
 * so a busy client costs one store read per few seconds instead of one per message. The price:
 * a refusal stored by another worker or node is seen here up to this much later.
 */
const RECALL_CACHE_MS = 5_000;
const RECALL_CACHE_MAX_ENTRIES = 10_000;

export class PolicyPipeline {
  readonly #checks: readonly Check[];
  readonly #opts: PipelineOptions;
  /** What this process last read from (or wrote to) the store per key; null: nothing stored. */
  readonly #recalled = new BoundedCache<string, StoredVerdict | null>(RECALL_CACHE_MAX_ENTRIES);
  readonly stages: ReadonlySet<PolicyStage>;
  /** Each stage's checks in order, found once (every message asks several stages). */
  readonly #byStage = new Map<PolicyStage, readonly Check[]>();

  constructor(checks: readonly Check[], opts: PipelineOptions) {
    const names = new Set<string>();
    for (const c of checks) {
      if (names.has(c.name)) throw new Error(`policy check "${c.name}" configured twice`);
      names.add(c.name);
    }
    this.#checks = checks;
    this.#opts = opts;
    this.stages = new Set(checks.flatMap((c) => c.stages));
    for (const stage of this.stages) this.#byStage.set(stage, checks.filter((c) => c.stages.includes(stage)));
  }

  /** The runner the connection calls for each `policy` output of the session machine. */
  readonly run = async (request: PolicyRequest, readSpilled: SpilledBodyReader | null = null): Promise<PolicyVerdict> => {
    const now = this.#opts.now ?? Date.now;
    const ctx: CheckContext = {
      stage: request.stage,
      session: request.session,
      transaction: request.transaction,
      recipient: request.recipient,
      heloName: request.heloName,
      message: request.message === null ? null : contentMessage(request.message, readSpilled),
      nowMs: now(),
    };
    const checks = this.#byStage.get(request.stage) ?? [];
    const keys = checks.map((c) => c.key?.(ctx) ?? defaultKey(ctx));
    // Security: RSET and new transactions do not launder a verdict (verdicts live in the session,
    // not the transaction). Every remembered refusal of this stage applies before any check runs,
    // so not even an earlier check's `accept` (an allow list) can skip it.
    if (ctx.session.verdicts.length > 0) {
      for (const [i, check] of checks.entries()) {
        const key = keys[i];
        const remembered = ctx.session.verdicts.find((v) => v.check === check.name && v.key === key && v.stage === request.stage);
        if (remembered === undefined) continue;
        this.#record(ctx, check.name, remembered.action, 'remembered in the session');
        return { action: remembered.action, reply: remembered.reply, check: check.name, reason: `remembered: ${remembered.reason}`, key };
      }
    }
    const headers: string[] = [];
    // Content checks' edits, in check order; the machine applies them in one place.
    const edits: MessageEdits[] = [];
    const passed = (action: 'continue' | 'accept'): PolicyVerdict => ({
      action,
      ...(headers.length === 0 ? {} : { headers }),
      ...(edits.length === 0 ? {} : { edits: mergeEdits(edits) }),
    });
    // The client's network, computed at most once per scope and stage.
    let hostNet: string | undefined;
    let wideNet: string | undefined;
    for (let i = 0; i < checks.length; i++) {
      const check = checks[i];
      const key = keys[i];
      // Only checks that keep refusals across sessions cost a store lookup per stage.
      const scope = check.memoryScope;
      const storeKey = scope === undefined ? '' : `v1:verdict:${check.name}:${request.stage}:${scope === 'host' ? (hostNet ??= clientNetwork(ctx.session.peer.address, HOST_PREFIXES)) : (wideNet ??= clientNetwork(ctx.session.peer.address, this.#opts.prefixes ?? DEFAULT_PREFIXES))}:${key}`;
      const recalled = scope === undefined ? null : this.#recall(storeKey, ctx);
      const stored = recalled instanceof Promise ? await recalled : recalled;
      if (stored !== null) {
        this.#record(ctx, check.name, stored.action, 'remembered for the client network');
        return { action: stored.action, reply: stored.reply, check: check.name, reason: `remembered for the client network: ${stored.reason}`, key };
      }
      const answer = this.#runOne(check, ctx);
      const verdict = answer instanceof Promise ? await answer : answer;
      this.#record(ctx, check.name, verdict.action, verdict.action === 'continue' || verdict.action === 'accept' ? '' : verdict.reason);
      if (verdict.action === 'continue' || verdict.action === 'accept') {
        if (verdict.headers !== undefined) headers.push(...verdict.headers);
        if (verdict.edits !== undefined) edits.push(verdict.edits);
        if (verdict.action === 'accept') return passed('accept');
        continue;
      }
      if (scope !== undefined && verdict.ttlSeconds !== undefined && verdict.ttlSeconds >= 1) {
        await this.#remember(storeKey, { action: verdict.action, reply: verdict.reply, reason: verdict.reason }, Math.floor(verdict.ttlSeconds), ctx);
      }
      // The check's key, always: what verdict memory looks up next time must be what it stored.
      return { ...verdict, check: check.name, key };
    }
    return passed('continue');
  };

  /**
   * Runs one check within its budget. A check that answers synchronously (from its cache, say)
   * costs no timer and no promise; one that goes async gets one timer, cleared when it answers,
   * whose abort is what the check sees and what ends the wait for it.
   */
  #runOne(check: Check, ctx: CheckContext): PolicyVerdict | Promise<PolicyVerdict> {
    const controller = new AbortController();
    let answer: PolicyVerdict | Promise<PolicyVerdict>;
    try {
      answer = check.run(ctx, controller.signal);
    } catch (err) {
      return this.#threw(check, ctx, err);
    }
    if (!(answer instanceof Promise)) return answer;
    const running = answer;
    const timeoutMs = check.timeoutMs ?? this.#opts.defaultTimeoutMs;
    return new Promise<PolicyVerdict>((resolve) => {
      const timer = setTimeout(() => {
        controller.abort();
        this.#opts.log.warn({ sid: ctx.session.id, check: check.name, stage: ctx.stage, timeoutMs }, 'policy check timed out');
        resolve(check.onTimeout ?? { action: 'tempfail', reply: REPLY.policyTimedOut, check: check.name, reason: `timed out after ${timeoutMs} ms` });
      }, timeoutMs);
      running.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          clearTimeout(timer);
          resolve(this.#threw(check, ctx, err));
        },
      );
    });
  }

  /** A check that throws has a bug: log it, answer a tempfail, keep the session. */
  #threw(check: Check, ctx: CheckContext, err: unknown): PolicyVerdict {
    this.#opts.log.error({ sid: ctx.session.id, check: check.name, stage: ctx.stage, err }, 'policy check threw');
    return { action: 'tempfail', reply: REPLY.localError, check: check.name, reason: 'check threw' };
  }

  /** A store failure is not a verdict: the check then runs as if nothing were remembered. */
  /** What the store remembers for this key: from this process's recent reads when it can. */
  #recall(storeKey: string, ctx: CheckContext): StoredVerdict | null | Promise<StoredVerdict | null> {
    const store = this.#opts.store;
    if (!store) return null;
    const hit = this.#recalled.get(storeKey, ctx.nowMs);
    if (hit !== undefined) return hit;
    return this.#read(store, storeKey, ctx);
  }

  async #read(store: StateStore, storeKey: string, ctx: CheckContext): Promise<StoredVerdict | null> {
    try {
      const text = await store.get(storeKey);
      const verdict = text === null ? null : (JSON.parse(text) as StoredVerdict);
      this.#cacheRecall(storeKey, verdict, ctx.nowMs);
      return verdict;
    } catch (err) {
      this.#opts.log.warn({ sid: ctx.session.id, err }, 'state store lookup failed');
      return null;
    }
  }

  #cacheRecall(storeKey: string, verdict: StoredVerdict | null, nowMs: number): void {
    this.#recalled.set(storeKey, verdict, nowMs + RECALL_CACHE_MS);
  }

  async #remember(storeKey: string, v: StoredVerdict, ttlSeconds: number, ctx: CheckContext): Promise<void> {
    const store = this.#opts.store;
    if (!store) return;
    if (ttlSeconds * 1000 >= RECALL_CACHE_MS) this.#cacheRecall(storeKey, v, ctx.nowMs);
    try {
      await store.set(storeKey, JSON.stringify(v), ttlSeconds);
    } catch (err) {
      this.#opts.log.warn({ sid: ctx.session.id, err }, 'state store write failed');
    }
  }

  /** Every check's verdict is counted (metrics) and logged with the session id; refusals are
   *  also logged at info by the session machine, so this line is debug. */
  #record(ctx: CheckContext, check: string, action: string, reason: string): void {
    this.#opts.onVerdict?.(check, ctx.stage, action);
    const log = this.#opts.log;
    if (log.isLevelEnabled('debug')) log.debug({ sid: ctx.session.id, check, stage: ctx.stage, action, ...(reason !== '' ? { reason } : {}) }, 'policy check verdict');
  }
}

/** Several checks' edits as one: header and recipient edits in check order, the first quarantine tag. */
function mergeEdits(all: readonly MessageEdits[]): MessageEdits {
  if (all.length === 1) return all[0];
  const quarantine = all.find((e) => e.quarantine !== undefined)?.quarantine;
  return {
    headers: all.flatMap((e) => e.headers ?? []),
    recipients: all.flatMap((e) => e.recipients ?? []),
    ...(quarantine !== undefined ? { quarantine } : {}),
  };
}

/**
 * What a verdict is about when the check does not say: the recipient at the rcpt stage; at the
 * content stage the one message (a refused message says nothing about the next one, so nothing
 * is inherited unless the check defines a key); the whole session elsewhere.
 */
function defaultKey(ctx: CheckContext): string {
  if (ctx.recipient !== null) return ctx.recipient.address.toLowerCase();
  if (ctx.stage === 'content') return `message:${ctx.transaction?.seq ?? 0}`;
  return '';
}
