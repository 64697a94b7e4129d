// Runs the configured checks of a stage in order, each within its time budget, and remembers
// refusals for the session: a later transaction that reaches the same check with the same key
// gets the remembered refusal (at least as strict), whatever RSET or a new MAIL did in between.
// Never lets a check's exception or slowness escape: a throw is our bug (tempfail, logged), a
// timeout is the check's defined verdict. Answers with a plain value when every check of the
// stage did (the common case for a busy sender: caches, static tables), a promise only from the
// first check or store read that goes async: a message asks two or three stages, and each promise
// and timer it does not need is per-message work (docs/benchmarks.md, policy overhead).

import type { Logger } from 'pino';
import type { Output, PolicyVerdict } from '../protocol/machine.ts';
import { REPLY, type Reply } from '../protocol/replies.ts';
import type { PolicyStage } from '../protocol/session.ts';
import { contentMessage, type SpilledBodyReader } from '../message/content.ts';
import { mergeEdits, type MessageEdits } from '../message/edits.ts';
import type { StateStore } from '../store/store.ts';
import { BoundedCache } from '../util/bounded-cache.ts';
import type { Check, CheckContext } from './check.ts';
import { clientNetwork, DEFAULT_PREFIXES, HOST_PREFIXES, type NetworkPrefixes } from './network.ts';
import { verdictStoreKey, type StoredVerdict } from './verdict-memory.ts';

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

/** One stage's run: its checks, their keys (computed when first needed), and what passing checks added. */
type StageRun = {
  readonly ctx: CheckContext;
  readonly checks: readonly Check[];
  readonly lastStoreKeys: StageChecks['lastStoreKeys'];
  readonly keys: (string | undefined)[];
  readonly headers: string[];
  /** Content checks' edits, in check order; the machine applies them in one place. */
  readonly edits: MessageEdits[];
};

/** A stage's checks in order, and the last store key each built (#storeKey). */
type StageChecks = { readonly checks: readonly Check[]; readonly lastStoreKeys: ({ net: string; key: string; storeKey: string } | undefined)[] };

const NO_CHECKS: StageChecks = { checks: [], lastStoreKeys: [] };


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
  readonly #byStage = new Map<PolicyStage, StageChecks>();
  /** The client networks of the last client asked about (its next message needs the same). */
  #lastNets: { address: string; host: string | undefined; wide: string | undefined } = { address: '', host: undefined, wide: undefined };
  /** An AbortController that a check answering synchronously gave back unused (#runOne). */
  #spareController: AbortController | null = null;

  constructor(checks: readonly Check[], opts: PipelineOptions) {
    const names = new Set<string>();
    for (const c of checks) {
      if (names.has(c.name)) throw new Error(`policy check "${c.name}" configured twice`);
      names.add(c.name);
    }
    this.#checks = checks;
    this.#opts = opts;
    this.stages = new Set(checks.flatMap((c) => c.stages));
    for (const stage of this.stages) this.#byStage.set(stage, { checks: checks.filter((c) => c.stages.includes(stage)), lastStoreKeys: [] });
  }

  /**
   * The runner the connection calls for each `policy` output of the session machine. A plain
   * value when every check of the stage answered synchronously (from its cache, a static table:
   * the common case for a busy sender), so the connection feeds the verdict back at once, with no
   * promise, no timer and no turn of the event loop; a promise from the first check (or store
   * read) that goes async, whose rest of the stage then runs after it.
   */
  readonly run = (request: PolicyRequest, readSpilled: SpilledBodyReader | null = null): PolicyVerdict | Promise<PolicyVerdict> => {
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
    const { checks, lastStoreKeys } = this.#byStage.get(request.stage) ?? NO_CHECKS;
    const run: StageRun = { ctx, checks, lastStoreKeys, keys: [], headers: [], edits: [] };
    // Security: RSET and new transactions do not launder a verdict (verdicts live in the session,
    // not the transaction). Every remembered refusal of this stage applies before any check runs,
    // so not even an earlier check's `accept` (an allow list) can skip it. A check's key is only
    // computed when the log holds a refusal of that check at this stage.
    const verdicts = ctx.session.verdicts;
    if (verdicts.length > 0) {
      for (let i = 0; i < checks.length; i++) {
        const name = checks[i].name;
        if (!verdicts.some((v) => v.check === name && v.stage === request.stage)) continue;
        const key = keyOf(run, i);
        const remembered = verdicts.find((v) => v.check === name && v.key === key && v.stage === request.stage);
        if (remembered === undefined) continue;
        this.#record(ctx, name, remembered.action, 'remembered in the session');
        return { action: remembered.action, reply: remembered.reply, check: name, reason: `remembered: ${remembered.reason}`, key };
      }
    }
    return this.#from(run, 0);
  };

  /** The session has ended: checks that hold per-session state (check.ts sessionClosed) let it go. */
  sessionClosed(sessionId: string): void {
    for (const check of this.#checks) {
      if (check.sessionClosed === undefined) continue;
      try {
        check.sessionClosed(sessionId);
      } catch (err) {
        this.#opts.log.error({ sid: sessionId, check: check.name, err }, 'policy check sessionClosed threw');
      }
    }
  }

  /** Runs the checks from `i` on, synchronously while each answers so; from the first that goes async, in #resume. */
  #from(run: StageRun, i: number): PolicyVerdict | Promise<PolicyVerdict> {
    for (; i < run.checks.length; i++) {
      const step = this.#step(run, i);
      if (step instanceof Promise) return this.#resume(run, i, step);
      if (step !== null) return step;
    }
    return passed(run, 'continue');
  }

  async #resume(run: StageRun, i: number, pending: Promise<PolicyVerdict | null>): Promise<PolicyVerdict> {
    const step = await pending;
    return step ?? this.#from(run, i + 1);
  }

  /**
   * One check of the stage: what the store remembers for the client (checks with a memory scope),
   * else the check itself. The stage's verdict, or null to go on with the next check.
   */
  #step(run: StageRun, i: number): PolicyVerdict | null | Promise<PolicyVerdict | null> {
    const check = run.checks[i];
    // Only checks that keep refusals across sessions cost a store lookup per stage.
    const storeKey = check.memoryScope === undefined || !this.#opts.store ? '' : this.#storeKey(run, i, check.memoryScope);
    if (storeKey !== '') {
      const recalled = this.#recall(storeKey, run.ctx);
      if (recalled instanceof Promise) return recalled.then((stored) => (stored !== null ? this.#fromStore(run, i, stored) : this.#check(run, i, storeKey)));
      if (recalled !== null) return this.#fromStore(run, i, recalled);
    }
    return this.#check(run, i, storeKey);
  }

  #fromStore(run: StageRun, i: number, stored: StoredVerdict): PolicyVerdict {
    const name = run.checks[i].name;
    this.#record(run.ctx, name, stored.action, 'remembered for the client network');
    return { action: stored.action, reply: stored.reply, check: name, reason: `remembered for the client network: ${stored.reason}`, key: keyOf(run, i) };
  }

  #check(run: StageRun, i: number, storeKey: string): PolicyVerdict | null | Promise<PolicyVerdict | null> {
    const answer = this.#runOne(run.checks[i], run.ctx);
    return answer instanceof Promise ? answer.then((verdict) => this.#judge(run, i, storeKey, verdict)) : this.#judge(run, i, storeKey, answer);
  }

  /** A check's verdict: recorded, its header fields and edits kept; a refusal with a TTL stored. */
  #judge(run: StageRun, i: number, storeKey: string, verdict: PolicyVerdict): PolicyVerdict | null | Promise<PolicyVerdict> {
    const name = run.checks[i].name;
    if (verdict.action === 'continue' || verdict.action === 'accept') {
      this.#record(run.ctx, name, verdict.action, '');
      if (verdict.headers !== undefined) run.headers.push(...verdict.headers);
      if (verdict.edits !== undefined) run.edits.push(verdict.edits);
      return verdict.action === 'accept' ? passed(run, 'accept') : null;
    }
    this.#record(run.ctx, name, verdict.action, verdict.reason);
    // The check's key, always: what verdict memory looks up next time must be what it stored.
    const refusal: PolicyVerdict = { ...verdict, check: name, key: keyOf(run, i) };
    if (storeKey !== '' && verdict.ttlSeconds !== undefined && verdict.ttlSeconds >= 1) {
      return this.#remember(storeKey, { action: verdict.action, reply: verdict.reply, reason: verdict.reason, at: run.ctx.nowMs }, Math.floor(verdict.ttlSeconds), run.ctx).then(() => refusal);
    }
    return refusal;
  }

  /**
   * The store key of a check's verdict for this client. The last one built per stage and check is
   * kept, with the client network of the last client: a busy client's next message asks for the
   * same key, which then costs no network arithmetic, no string building, and (the same string
   * object) no hashing in the recall cache.
   */
  #storeKey(run: StageRun, i: number, scope: 'host' | 'network'): string {
    const key = keyOf(run, i);
    const address = run.ctx.session.peer.address;
    let nets = this.#lastNets;
    if (nets.address !== address) this.#lastNets = nets = { address, host: undefined, wide: undefined };
    const net = scope === 'host' ? (nets.host ??= clientNetwork(address, HOST_PREFIXES)) : (nets.wide ??= clientNetwork(address, this.#opts.prefixes ?? DEFAULT_PREFIXES));
    const last = run.lastStoreKeys[i];
    if (last !== undefined && last.net === net && last.key === key) return last.storeKey;
    const storeKey = verdictStoreKey(run.checks[i].name, run.ctx.stage, net, key);
    run.lastStoreKeys[i] = { net, key, storeKey };
    return storeKey;
  }

  /**
   * Runs one check within its budget. A check that answers synchronously (from its cache, say)
   * costs no timer, no promise and no new AbortController (it gets the spare one back); one that
   * goes async gets one timer, cleared when it answers, whose abort is what the check sees and
   * what ends the wait for it.
   */
  #runOne(check: Check, ctx: CheckContext): PolicyVerdict | Promise<PolicyVerdict> {
    const controller = this.#spareController ?? new AbortController();
    this.#spareController = null;
    let answer: PolicyVerdict | Promise<PolicyVerdict>;
    try {
      answer = check.run(ctx, controller.signal);
    } catch (err) {
      this.#spareController = controller;
      return this.#threw(check, ctx, err);
    }
    if (!(answer instanceof Promise)) {
      // Never aborted, and the check is done with it (check.ts: a synchronous answer keeps no signal).
      this.#spareController = controller;
      return answer;
    }
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

  /**
   * Drops what this process remembers of the store's records (`portcullis verdicts forget`): the
   * next lookup of every key reads the store again, so a lifted refusal is lifted at once here.
   */
  forgetRecalled(): void {
    this.#recalled.clear();
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

/** The stage passed: 'continue' (no opinion) or 'accept', with what the passing checks added. */
function passed(run: StageRun, action: 'continue' | 'accept'): PolicyVerdict {
  if (run.headers.length === 0 && run.edits.length === 0) return { action };
  return {
    action,
    ...(run.headers.length === 0 ? {} : { headers: run.headers }),
    ...(run.edits.length === 0 ? {} : { edits: mergeEdits(run.edits) }),
  };
}

/** A check's key for this run, computed once (the check's own `key`, else the default). */
function keyOf(run: StageRun, i: number): string {
  return (run.keys[i] ??= run.checks[i].key?.(run.ctx) ?? defaultKey(run.ctx));
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
