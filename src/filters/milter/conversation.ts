// One SMTP session's conversation with one milter, as Postfix holds it: one connection for the
// whole session, option negotiation honoured (SMFIP_NO* commands not sent, SMFIP_NR_* replies
// not awaited), the macros filters expect before each command, ABORT before a new transaction
// when the last one did not end at EOB, QUIT at the end. Each step first sends what the filter
// has not seen yet (connect, HELO, MAIL, the recipients), so a stage the policy pipeline skipped
// for this check (an earlier check's accept) never leaves the filter out of step.
// Never throws: every failure (connect, timeout, garbage, a close mid-message) closes the link
// and is a `failed` outcome; the check maps it to the milter's on_failure.

import { MilterError, MilterLink, type MilterAddress } from './client.ts';
import {
  ACTION,
  ALL_ACTIONS,
  CMD,
  encodeAbort,
  encodeConnect,
  encodeData,
  encodeEob,
  encodeEoh,
  encodeHeader,
  encodeHelo,
  encodeMacros,
  encodeMail,
  encodeOptneg,
  encodeQuit,
  encodeRcpt,
  MAX_BODY_CHUNK,
  MILTER_VERSION,
  OFFERED_PROTOCOL,
  PROTO,
  encodeBodyHead,
  type ConnectFamily,
  type MilterResponse,
} from './codec.ts';

export type MilterSpec = {
  readonly address: MilterAddress;
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
  /** Largest replacement body accepted (SMFIR_REPLBODY); more is a protocol failure. */
  readonly maxBodyBytes: number;
};

/** What the session knows, for CONNECT, HELO and the macros. */
export type SessionFacts = {
  /** Our host name (macro j). */
  readonly hostname: string;
  /** {daemon_name}. */
  readonly daemonName: string;
  /** `name`: the client's verified host name; null when unknown (CONNECT then names "[address]"). */
  readonly client: { readonly address: string; readonly port: number; readonly name: string | null };
  readonly local: { readonly address: string; readonly port: number };
  readonly heloName: string | null;
  readonly tls: { readonly protocol: string; readonly cipher: string } | null;
  readonly auth: { readonly identity: string; readonly mechanism: string } | null;
};

export type TransactionFacts = {
  readonly seq: number;
  /** Macro i: the queue id the message will be stored under. */
  readonly queueId: string;
  /** The MAIL FROM arguments: "<address>" then ESMTP parameters. */
  readonly mailArgs: readonly string[];
  readonly sender: string;
};

/** A modification asked for at end of message (SMFIR_* other than the final reply). */
export type Modification = Extract<MilterResponse, { kind: 'addheader' | 'insheader' | 'chgheader' | 'chgfrom' | 'addrcpt' | 'delrcpt' | 'quarantine' }> | { readonly kind: 'replbody'; readonly body: Buffer };

export type Outcome =
  | { readonly kind: 'continue' }
  /** Accepted: the filter wants nothing more of this transaction (or, at connect and HELO, session). */
  | { readonly kind: 'accept' }
  | { readonly kind: 'reject' | 'tempfail'; readonly replyText: string | null }
  | { readonly kind: 'discard' }
  | { readonly kind: 'failed'; readonly reason: string };

export type ContentOutcome = Outcome & { readonly modifications?: readonly Modification[] };

type Txn = { seq: number; status: 'open' | 'accepted' | 'refused' | 'discard' | 'done'; rcpts: Set<string>; queueId: string };

/** Pieces of one body packet written as they are; more are joined first. */
const MAX_WRITE_PIECES = 16;
/** Modifications one end-of-message may carry (a real filter sends a handful). */
const MAX_MODIFICATIONS = 10_000;

const CONTINUE: Outcome = { kind: 'continue' };
const ACCEPT: Outcome = { kind: 'accept' };
// The packets that never change, encoded once (written as they are; nothing mutates a packet).
const OPTNEG = encodeOptneg(MILTER_VERSION, ALL_ACTIONS, OFFERED_PROTOCOL);
const DATA = encodeData();
const EOH = encodeEoh();
const EOB = encodeEob();
const ABORT = encodeAbort();
const QUIT = encodeQuit();

export class MilterConversation {
  readonly #spec: MilterSpec;
  #link: MilterLink | null = null;
  #status: 'new' | 'open' | 'accepted' | 'discard' | 'refused' | 'failed' | 'closed' = 'new';
  #failure = '';
  #protocol = 0;
  #actions = 0;
  #heloSent: string | null = null;
  #txn: Txn | null = null;
  /** Steps run one at a time (a late step after a pipeline timeout waits its turn). */
  #chain: Promise<unknown> = Promise.resolve();

  constructor(spec: MilterSpec) {
    this.#spec = spec;
  }

  /** The negotiated flags (tests, logs). */
  get negotiated(): { protocol: number; actions: number } {
    return { protocol: this.#protocol, actions: this.#actions };
  }

  connect(facts: SessionFacts, deadlineMs: number): Promise<Outcome> {
    return this.#serial(() => this.#connect(facts, deadlineMs));
  }

  helo(facts: SessionFacts, deadlineMs: number): Promise<Outcome> {
    return this.#serial(async () => {
      const ready = await this.#ready(facts, deadlineMs);
      if (ready !== null) return ready;
      return this.#helo(facts, deadlineMs, true);
    });
  }

  mail(facts: SessionFacts, txn: TransactionFacts, deadlineMs: number): Promise<Outcome> {
    return this.#serial(async () => {
      const ready = await this.#ready(facts, deadlineMs);
      if (ready !== null) return ready;
      return this.#mail(facts, txn, deadlineMs);
    });
  }

  rcpt(facts: SessionFacts, txn: TransactionFacts, rcptArgs: readonly string[], deadlineMs: number): Promise<Outcome> {
    return this.#serial(async () => {
      const ready = await this.#readyTxn(facts, txn, deadlineMs);
      if (ready !== null) return ready;
      return this.#rcpt(txn, rcptArgs, deadlineMs);
    });
  }

  /**
   * DATA, the header fields, EOH, the body in chunks of at most 65,535 octets, EOB, and what the
   * filter answers to EOB: its modifications and its final reply. `recipients` are the
   * transaction's accepted recipients' RCPT arguments (any the filter has not seen are sent first).
   */
  content(
    facts: SessionFacts,
    txn: TransactionFacts,
    recipients: readonly (readonly string[])[],
    fields: readonly { readonly name: string; readonly value: string }[],
    body: () => AsyncIterable<Buffer>,
    deadlineMs: number,
  ): Promise<ContentOutcome> {
    return this.#serial(async () => {
      const ready = await this.#readyTxn(facts, txn, deadlineMs);
      if (ready !== null) return ready;
      for (const args of recipients) {
        const t = this.#txn!;
        if (t.status !== 'open') break;
        if (t.rcpts.has(args[0])) continue;
        const r = await this.#rcpt(txn, args, deadlineMs);
        if (r.kind === 'failed') return r;
      }
      return this.#content(fields, body, deadlineMs);
    });
  }

  /**
   * Ends the conversation: ABORT when a transaction is still open (the client went away mid-way),
   * then QUIT (neither has a reply) and close. Safe to call in any state, more than once.
   */
  close(): void {
    const link = this.#link;
    this.#link = null;
    this.#status = 'closed';
    if (link === null) return;
    const isOpen = this.#txn !== null && this.#txn.status !== 'done';
    if (!link.isBroken) void link.write(isOpen ? [ABORT, QUIT] : [QUIT], 1000)?.catch(() => undefined);
    link.end();
  }

  #serial<T>(step: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(step, step);
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /** null when the filter takes part in this session's next step, else that step's outcome. */
  async #ready(facts: SessionFacts, deadlineMs: number): Promise<Outcome | null> {
    if (this.#status === 'new') {
      const r = await this.#connect(facts, deadlineMs);
      if (r.kind === 'failed') return r;
    }
    switch (this.#status) {
      case 'open':
        return null;
      case 'accepted':
      case 'refused':
      case 'closed':
        return CONTINUE;
      case 'discard':
        return { kind: 'discard' };
      case 'failed':
        return { kind: 'failed', reason: this.#failure };
      default:
        return CONTINUE;
    }
  }

  /** As #ready, and this transaction's MAIL sent: null when the filter takes part in it. */
  async #readyTxn(facts: SessionFacts, txn: TransactionFacts, deadlineMs: number): Promise<Outcome | null> {
    const ready = await this.#ready(facts, deadlineMs);
    if (ready !== null) return ready;
    // A refused MAIL does not use up its number: the same number after a refusal is a new transaction.
    if (this.#txn?.seq !== txn.seq || this.#txn.status === 'refused') {
      const r = await this.#mail(facts, txn, deadlineMs);
      if (r.kind === 'failed') return r;
    }
    const t = this.#txn!;
    if (this.#status !== 'open') return this.#ready(facts, deadlineMs);
    switch (t.status) {
      case 'open':
        return null;
      case 'discard':
        return { kind: 'discard' };
      default:
        // Accepted (nothing more wanted) or refused (the SMTP side refused it too).
        return CONTINUE;
    }
  }

  async #connect(facts: SessionFacts, deadlineMs: number): Promise<Outcome> {
    if (this.#status !== 'new') return CONTINUE;
    try {
      const spec = this.#spec;
      this.#link = await MilterLink.connect(spec.address, Math.max(1, Math.min(spec.connectTimeoutMs, deadlineMs - Date.now())));
      if ((this.#status as string) === 'closed') {
        this.#link.destroy();
        this.#link = null;
        return CONTINUE;
      }
      this.#status = 'open';
      const answer = await this.#ask([OPTNEG], deadlineMs);
      if (answer.kind !== 'optneg') return this.#fail(`expected the SMFIC_OPTNEG answer, got '${answer.kind}'`);
      if (answer.version < 2 || answer.version > MILTER_VERSION) return this.#fail(`filter speaks milter version ${answer.version}`);
      if ((answer.actions & ~ALL_ACTIONS) !== 0) return this.#fail(`filter asks for unknown actions 0x${answer.actions.toString(16)}`);
      this.#actions = answer.actions;
      // Honoured whatever we offered: rspamd answers with every no-reply bit set even when offered none.
      this.#protocol = answer.protocol;
      if (this.#has(PROTO.noConnect)) return CONTINUE;
      const name = facts.client.name ?? 'unknown';
      const family: ConnectFamily = facts.client.address.includes(':') ? '6' : /^\d+\.\d+\.\d+\.\d+$/.test(facts.client.address) ? '4' : 'U';
      const packets = [
        encodeMacros(CMD.connect, [
          ['j', facts.hostname],
          ['{daemon_name}', facts.daemonName],
          ['{daemon_addr}', facts.local.address],
          ['{daemon_port}', String(facts.local.port)],
          ['v', 'Portcullis'],
          ['_', `${name} [${facts.client.address}]`],
          ['{client_addr}', facts.client.address],
          ['{client_name}', name],
          ['{client_port}', String(facts.client.port)],
          ['{client_ptr}', name],
        ]),
        encodeConnect(facts.client.name ?? `[${facts.client.address}]`, family, facts.client.port, facts.client.address),
      ];
      const r = await this.#command(packets, PROTO.nrConnect, deadlineMs);
      return r === null ? CONTINUE : this.#sessionReply(r);
    } catch (err) {
      return this.#caught(err);
    }
  }

  async #helo(facts: SessionFacts, deadlineMs: number, isAnswered: boolean): Promise<Outcome> {
    try {
      if (this.#txn !== null && this.#txn.status !== 'done') await this.#abort(deadlineMs);
      const name = facts.heloName ?? '';
      this.#heloSent = name;
      if (this.#has(PROTO.noHelo)) return CONTINUE;
      const r = await this.#command([encodeMacros(CMD.helo, tlsMacros(facts)), encodeHelo(name)], PROTO.nrHelo, deadlineMs);
      if (r === null) return CONTINUE;
      const outcome = this.#sessionReply(r);
      return isAnswered ? outcome : CONTINUE;
    } catch (err) {
      return this.#caught(err);
    }
  }

  async #mail(facts: SessionFacts, txn: TransactionFacts, deadlineMs: number): Promise<Outcome> {
    try {
      if (facts.heloName !== null && this.#heloSent !== facts.heloName) {
        const r = await this.#helo(facts, deadlineMs, false);
        if (r.kind === 'failed') return r;
        if (this.#status !== 'open') return (await this.#ready(facts, deadlineMs)) ?? CONTINUE;
      }
      if (this.#txn !== null && this.#txn.status !== 'done') await this.#abort(deadlineMs);
      const t: Txn = { seq: txn.seq, status: 'open', rcpts: new Set(), queueId: txn.queueId };
      this.#txn = t;
      if (this.#has(PROTO.noMail)) return CONTINUE;
      const macros: [string, string][] = [
        ['i', txn.queueId],
        ['{mail_addr}', txn.sender],
        ['{mail_host}', hostOf(txn.sender)],
        ['{mail_mailer}', 'smtp'],
      ];
      if (facts.auth !== null) macros.push(['{auth_type}', facts.auth.mechanism], ['{auth_authen}', facts.auth.identity]);
      const r = await this.#command([encodeMacros(CMD.mail, macros), encodeMail(txn.mailArgs)], PROTO.nrMail, deadlineMs);
      return r === null ? CONTINUE : this.#txnReply(t, r);
    } catch (err) {
      return this.#caught(err);
    }
  }

  async #rcpt(txn: TransactionFacts, args: readonly string[], deadlineMs: number): Promise<Outcome> {
    try {
      const t = this.#txn!;
      t.rcpts.add(args[0]);
      if (this.#has(PROTO.noRcpt)) return CONTINUE;
      const address = args[0].replace(/^<|>$/g, '');
      const packets = [
        encodeMacros(CMD.rcpt, [
          ['i', txn.queueId],
          ['{rcpt_addr}', address],
          ['{rcpt_host}', hostOf(address)],
          ['{rcpt_mailer}', 'smtp'],
        ]),
        encodeRcpt(args),
      ];
      const r = await this.#command(packets, PROTO.nrRcpt, deadlineMs);
      if (r === null) return CONTINUE;
      // A refusal here refuses this one recipient; the transaction goes on.
      if (r.kind === 'reject' || r.kind === 'tempfail' || r.kind === 'replycode') {
        t.rcpts.delete(args[0]);
        return toOutcome(r);
      }
      return this.#txnReply(t, r);
    } catch (err) {
      return this.#caught(err);
    }
  }

  async #content(fields: readonly { readonly name: string; readonly value: string }[], body: () => AsyncIterable<Buffer>, deadlineMs: number): Promise<ContentOutcome> {
    const t = this.#txn!;
    try {
      const qid: [string, string][] = [['i', t.queueId]];
      if (!this.#has(PROTO.noData)) {
        const r = await this.#command([encodeMacros(CMD.data, qid), DATA], PROTO.nrData, deadlineMs);
        if (r !== null && r.kind !== 'continue') return this.#txnEnd(t, r);
      }
      if (!this.#has(PROTO.noHeaders)) {
        const leading = this.#has(PROTO.headerLeadingSpace);
        const isAnswered = !this.#has(PROTO.nrHeader);
        // Headers the filter answers go one round trip each; unanswered ones (SMFIP_NR_HDR) go
        // together, in one write.
        const unanswered: Buffer[] = [];
        for (const f of fields) {
          if (f.name === '') continue;
          // Folds as Sendmail and Postfix send them: LF + the white space (libmilter filters expect it).
          const unfolded = leading || (f.value[0] !== ' ' && f.value[0] !== '\t') ? f.value : f.value.slice(1);
          const packet = encodeHeader(f.name, unfolded.includes('\r\n') ? unfolded.replace(/\r\n/g, '\n') : unfolded);
          if (!isAnswered) {
            unanswered.push(packet);
            continue;
          }
          const r = final(await this.#ask([packet], deadlineMs));
          if (r.kind !== 'continue') return this.#txnEnd(t, r);
        }
        if (unanswered.length > 0) await this.#send(unanswered, deadlineMs);
      }
      if (!this.#has(PROTO.noEoh)) {
        const r = await this.#command([encodeMacros(CMD.eoh, qid), EOH], PROTO.nrEoh, deadlineMs);
        if (r !== null && r.kind !== 'continue') return this.#txnEnd(t, r);
      }
      if (!this.#has(PROTO.noBody)) {
        const skip = await this.#sendBody(body, deadlineMs);
        if (skip !== null) return this.#txnEnd(t, skip);
      }
      const modifications: Modification[] = [];
      let headerOctets = 0;
      let replaced: Buffer[] | null = null;
      let replacedBytes = 0;
      // EOB's answer: its modifications, then the final reply (`continue` asks for the next one).
      for (let r = await this.#ask([encodeMacros(CMD.eob, qid), EOB], deadlineMs); ; r = await this.#next(deadlineMs)) {
        // Bounded: a filter cannot make us hold more than a message's worth of edits.
        if (modifications.length >= MAX_MODIFICATIONS) return this.#fail(`more than ${MAX_MODIFICATIONS} modifications`);
        if (r.kind === 'addheader' || r.kind === 'insheader' || r.kind === 'chgheader') {
          headerOctets += r.name.length + r.value.length;
          if (headerOctets > this.#spec.maxBodyBytes) return this.#fail(`header modifications over ${this.#spec.maxBodyBytes} octets`);
        }
        switch (r.kind) {
          case 'addheader':
          case 'insheader':
            if (!this.#may(ACTION.addHeaders)) return this.#fail(`'${r.kind}' without the add-headers action`);
            modifications.push(r);
            continue;
          case 'chgheader':
            if (!this.#may(ACTION.changeHeaders)) return this.#fail(`'${r.kind}' without the change-headers action`);
            modifications.push(r);
            continue;
          case 'chgfrom':
            if (!this.#may(ACTION.changeFrom)) return this.#fail(`'${r.kind}' without the change-from action`);
            modifications.push(r);
            continue;
          case 'addrcpt':
            if (!this.#may(r.args === '' ? ACTION.addRcpt | ACTION.addRcptPar : ACTION.addRcptPar)) return this.#fail(`'${r.kind}' without the add-recipient action`);
            modifications.push(r);
            continue;
          case 'delrcpt':
            if (!this.#may(ACTION.delRcpt)) return this.#fail(`'${r.kind}' without the delete-recipient action`);
            modifications.push(r);
            continue;
          case 'quarantine':
            if (!this.#may(ACTION.quarantine)) return this.#fail(`'${r.kind}' without the quarantine action`);
            modifications.push(r);
            continue;
          case 'replbody':
            if (!this.#may(ACTION.changeBody)) return this.#fail(`'${r.kind}' without the change-body action`);
            replacedBytes += r.data.length;
            if (replacedBytes > this.#spec.maxBodyBytes) return this.#fail(`replacement body over ${this.#spec.maxBodyBytes} octets`);
            (replaced ??= []).push(r.data);
            continue;
          case 'setsymlist':
          case 'optneg':
            return this.#fail(`unexpected '${r.kind}' at end of message`);
          default: {
            t.status = 'done';
            const outcome = toOutcome(r);
            if (outcome.kind === 'failed') return this.#fail(outcome.reason);
            if (outcome.kind !== 'continue' && outcome.kind !== 'accept') return outcome;
            if (replaced !== null) modifications.push({ kind: 'replbody', body: Buffer.concat(replaced) });
            return modifications.length === 0 ? outcome : { ...outcome, modifications };
          }
        }
      }
    } catch (err) {
      return this.#caught(err);
    }
  }

  /** The body as SMFIC_BODY packets of at most 65,535 octets; the filter's answer when it stops the body early. */
  async #sendBody(body: () => AsyncIterable<Buffer>, deadlineMs: number): Promise<MilterResponse | null> {
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    // A packet's head and its pieces leave in one write (a writev): the body is not copied here,
    // unless it came in many small pieces (then one copy beats a long vector).
    const flush = async (pieces: Buffer[], bytes: number): Promise<MilterResponse | null> => {
      const packet = pieces.length <= MAX_WRITE_PIECES ? [encodeBodyHead(bytes), ...pieces] : [encodeBodyHead(bytes), Buffer.concat(pieces, bytes)];
      const r = await this.#command(packet, PROTO.nrBody, deadlineMs);
      // SMFIR_SKIP (no more body wanted: go on with EOB) is told apart by the caller.
      return r === null || r.kind === 'continue' ? null : r;
    };
    for await (const piece of body()) {
      let rest = piece;
      while (rest.length > 0) {
        const room = MAX_BODY_CHUNK - pendingBytes;
        pending.push(rest.subarray(0, room));
        pendingBytes += Math.min(room, rest.length);
        rest = rest.subarray(room);
        if (pendingBytes === MAX_BODY_CHUNK) {
          const r = await flush(pending, pendingBytes);
          pending = [];
          pendingBytes = 0;
          if (r !== null) return r.kind === 'skip' ? null : r;
        }
      }
    }
    if (pendingBytes > 0) {
      const r = await flush(pending, pendingBytes);
      if (r !== null) return r.kind === 'skip' ? null : r;
    }
    return null;
  }

  async #abort(deadlineMs: number): Promise<void> {
    this.#txn = null;
    await this.#send([ABORT], deadlineMs);
  }

  #has(flag: number): boolean {
    return (this.#protocol & flag) !== 0;
  }

  #may(action: number): boolean {
    return (this.#actions & action) !== 0;
  }

  #wait(deadlineMs: number): number {
    return Math.max(1, Math.min(this.#spec.commandTimeoutMs, deadlineMs - Date.now()));
  }

  /** A command before EOB: written, then its final answer awaited, or null when the filter
   *  negotiated no reply to it (`noReply`, an SMFIP_NR_* flag). */
  async #command(packets: readonly Buffer[], noReply: number, deadlineMs: number): Promise<MilterResponse | null> {
    if (this.#has(noReply)) {
      await this.#send(packets, deadlineMs);
      return null;
    }
    return final(await this.#ask(packets, deadlineMs));
  }

  /** Writes a command the filter does not answer (negotiated SMFIP_NR_*, ABORT). */
  async #send(packets: readonly Buffer[], deadlineMs: number): Promise<void> {
    const link = this.#inStep();
    const drained = link.write(packets, this.#wait(deadlineMs));
    if (drained !== null) await drained;
  }

  /** Writes a command and waits for the filter's response (one round trip, one wait on it). */
  #ask(packets: readonly Buffer[], deadlineMs: number): Promise<MilterResponse> {
    let link: MilterLink;
    try {
      link = this.#inStep();
    } catch (err) {
      return Promise.reject(err);
    }
    const ms = this.#wait(deadlineMs);
    const drained = link.write(packets, ms);
    if (drained === null) return link.next(ms);
    return drained.then(() => link.next(this.#wait(deadlineMs)));
  }

  /** The link, when the two sides are in step (else a MilterError). */
  #inStep(): MilterLink {
    const link = this.#link;
    if (link === null) throw new MilterError('closed', 'no connection');
    // A response nobody asked for would be read as the answer to this command: the two sides
    // are out of step (a filter replying to a command it negotiated no reply for, say).
    if (link.hasUnread) throw new MilterError('protocol', 'response received that answers no command');
    return link;
  }

  #next(deadlineMs: number): Promise<MilterResponse> {
    const link = this.#link;
    if (link === null) return Promise.reject(new MilterError('closed', 'no connection'));
    return link.next(this.#wait(deadlineMs));
  }

  /** A reply at CONNECT or HELO: accept and discard cover the session. */
  #sessionReply(r: MilterResponse): Outcome {
    const outcome = toOutcome(r);
    if (outcome.kind === 'failed') return this.#fail(outcome.reason);
    if (outcome.kind === 'accept') {
      this.#status = 'accepted';
      this.#quitQuietly();
    } else if (outcome.kind === 'discard') this.#status = 'discard';
    return outcome;
  }

  /** A reply at MAIL or RCPT: accept and discard cover the transaction. */
  #txnReply(t: Txn, r: MilterResponse): Outcome {
    const outcome = toOutcome(r);
    if (outcome.kind === 'failed') return this.#fail(outcome.reason);
    if (outcome.kind === 'accept') t.status = 'accepted';
    else if (outcome.kind === 'discard') t.status = 'discard';
    else if (outcome.kind !== 'continue') t.status = 'refused';
    return outcome.kind === 'discard' ? CONTINUE : outcome;
  }

  /** The message ended before EOB (a final reply to DATA, a header, EOH or the body). */
  #txnEnd(t: Txn, r: MilterResponse): ContentOutcome {
    const outcome = toOutcome(r);
    if (outcome.kind === 'failed') return this.#fail(outcome.reason);
    t.status = outcome.kind === 'accept' ? 'accepted' : 'refused';
    return outcome;
  }

  /** Accepted for the session: nothing more to say to the filter. */
  #quitQuietly(): void {
    const link = this.#link;
    this.#link = null;
    if (link === null) return;
    void link.write([QUIT], 1000)?.catch(() => undefined);
    link.end();
  }

  #caught(err: unknown): Outcome {
    if (err instanceof MilterError) return this.#fail(`${err.code}: ${err.message}`);
    return this.#fail(`unexpected error: ${err instanceof Error ? err.message : String(err)}`);
  }

  #fail(reason: string): Outcome & { kind: 'failed' } {
    this.#status = 'failed';
    this.#failure = reason;
    this.#link?.destroy();
    this.#link = null;
    return { kind: 'failed', reason };
  }
}

/** A reply to a command before EOB: only a final answer is valid there (modifications are EOB's). */
function final(r: MilterResponse): MilterResponse {
  switch (r.kind) {
    case 'accept':
    case 'continue':
    case 'discard':
    case 'reject':
    case 'tempfail':
    case 'replycode':
    case 'skip':
    case 'connfail':
    case 'shutdown':
      return r;
    default:
      throw new MilterError('protocol', `unexpected '${r.kind}' before end of message`);
  }
}

function toOutcome(r: MilterResponse): Outcome {
  switch (r.kind) {
    case 'accept':
      return ACCEPT;
    case 'continue':
      return CONTINUE;
    case 'discard':
      return { kind: 'discard' };
    case 'reject':
      return { kind: 'reject', replyText: null };
    case 'tempfail':
      return { kind: 'tempfail', replyText: null };
    case 'replycode':
      // Only a refusal may be set this way (libmilter allows 4xx and 5xx); the check validates the rest.
      if (!/^[45]\d\d/.test(r.text)) return { kind: 'failed', reason: `SMFIR_REPLYCODE with a code that is no refusal: ${JSON.stringify(r.text.slice(0, 40))}` };
      return { kind: r.text.startsWith('4') ? 'tempfail' : 'reject', replyText: r.text };
    case 'connfail':
    case 'shutdown':
      return { kind: 'tempfail', replyText: null };
    default:
      return { kind: 'failed', reason: `unexpected '${r.kind}'` };
  }
}

/** The macros Postfix sends with HELO (milter_helo_macros): the TLS facts. */
function tlsMacros(facts: SessionFacts): [string, string][] {
  if (facts.tls === null) return [];
  return [
    ['{tls_version}', facts.tls.protocol],
    ['{cipher}', facts.tls.cipher],
  ];
}

function hostOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1);
}
