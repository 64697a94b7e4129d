// The sans-I/O SMTP session machine: inputs (bytes, verdicts, spool answers, TLS, time) in,
// outputs (replies, actions) out. No sockets, no timers, no clock reads, no randomness.
// Rule 1: while an action is outstanding (policy, commit, TLS) no further input is framed; the
// rest of a pipelined batch waits in the framer and is answered strictly in order afterwards.
// RFC 5321 (4.1.1 commands, 4.3.2 sequences), RFC 2920 (PIPELINING), RFC 3030 (CHUNKING),
// RFC 3207 (STARTTLS).

import { assertNever, parseCommand, type Command } from './command.ts';
import { checkHelo, ehloReply } from './commands/ehlo.ts';
import { checkMail } from './commands/mail.ts';
import { checkRcpt } from './commands/rcpt.ts';
import { ContentScanner, Framer, type Frame } from './framing.ts';
import type { MachineConfig } from './machine-config.ts';
import { renameForgedAuthResults } from './auth-results.ts';
import { formatReceived } from './received.ts';
import { REPLY, type Reply } from './replies.ts';
import {
  newSessionSecurity,
  type Peer,
  type PolicyStage,
  type SessionSecurity,
  type Transaction,
  type TransactionRecipient,
} from './session.ts';
import type { Envelope } from '../spool/types.ts';

/**
 * A policy check's answer. `continue` means "no opinion"; `accept` ends the stage's checks.
 * Refusals carry the client's reply, the check's name, the reason for the log, and the key the
 * verdict is about (what a later transaction must match to inherit it) with an optional TTL.
 * `headers` (continue/accept only): header fields, without CRLF, for the transaction's message,
 * added above our Received field (e.g. Received-SPF); ignored where there is no transaction.
 */
export type PolicyVerdict =
  | { action: 'continue'; headers?: readonly string[] }
  | { action: 'accept'; headers?: readonly string[] }
  | { action: 'tempfail' | 'reject' | 'disconnect'; reply: Reply; check: string; reason: string; key?: string; ttlSeconds?: number };

export type Input =
  | { type: 'connected'; nowMs: number; sessionId: string; peer: Peer; local: Peer; isRelayClient: boolean; isTls: boolean }
  | { type: 'bytes'; nowMs: number; data: Buffer }
  | { type: 'verdict'; nowMs: number; verdict: PolicyVerdict }
  | { type: 'committed'; nowMs: number }
  | { type: 'commit-failed'; nowMs: number; reason: string }
  | { type: 'tls-ready'; nowMs: number; protocol: string }
  | { type: 'tls-failed'; nowMs: number; reason: string }
  | { type: 'timeout'; nowMs: number }
  | { type: 'shutdown'; nowMs: number }
  | { type: 'end-of-input'; nowMs: number }
  /** The spool's free space fell below (or rose back above) its floor: MAIL is refused with
   *  452 4.3.1 while it is low, so no client uploads a body only to get a 451. */
  | { type: 'spool-space'; nowMs: number; isLow: boolean };

export type LogLevel = 'debug' | 'info' | 'warn';

export type Output =
  | { type: 'reply'; reply: Reply }
  | { type: 'start-tls' }
  | {
      type: 'policy';
      stage: PolicyStage;
      session: Readonly<SessionSecurity>;
      transaction: Readonly<Transaction> | null;
      recipient: TransactionRecipient | null;
      /** The HELO/EHLO name: at the helo stage the one being announced, later the session's. */
      heloName: string | null;
    }
  | { type: 'commit'; envelope: Envelope; body: Buffer[] }
  | { type: 'close' }
  | { type: 'log'; level: LogLevel; msg: string; fields?: Record<string, unknown> };

/** What the shell should wait for next, and so which timeout applies. */
export type Phase = 'command' | 'data' | 'waiting' | 'closed';

type Waiting =
  | { kind: 'none' }
  | { kind: 'policy'; stage: PolicyStage; txn: Transaction | null; onContinue: (out: Output[], nowMs: number) => void }
  | { kind: 'commit'; queueId: string; envelope: Envelope }
  | { kind: 'tls' }
  | { kind: 'closed' };

/** After a BDAT command: what to answer once its octets have been read. */
type BdatState = { size: number; isLast: boolean; refusal: Reply | null; isRestOfRefusedMessage: boolean };

export class SmtpMachine {
  readonly #cfg: MachineConfig;
  readonly #framer: Framer;
  #session: SessionSecurity | null = null;
  #txn: Transaction | null = null;
  #scanner: ContentScanner | null = null;
  #bdat: BdatState | null = null;
  #waiting: Waiting = { kind: 'none' };
  /** A BDAT message was refused before its LAST chunk: the client may have pipelined the rest;
   *  those chunks get the same refusal without counting as new errors (RFC 3030 4.1). */
  #refusedBdat: Reply | null = null;
  /** The client half-closed: finish the outstanding action and the complete commands already
   *  received (their replies can still be written), then close. */
  #isInputEnded = false;
  /** A connect-stage refusal: RFC 5321 3.1, only QUIT is served after it (503 to the rest). */
  #isRefusedAtConnect = false;
  /** The spool is below its free-space floor (fed by the shell): MAIL gets 452 4.3.1. */
  #isSpoolLow = false;
  /** Time of the input being handled: the only clock the core knows. */
  #nowMs = 0;

  constructor(cfg: MachineConfig) {
    this.#cfg = cfg;
    this.#framer = new Framer(cfg.maxCommandLineBytes);
  }

  get session(): Readonly<SessionSecurity> | null {
    return this.#session;
  }

  get transaction(): Readonly<Transaction> | null {
    return this.#txn;
  }

  get phase(): Phase {
    const w = this.#waiting.kind;
    if (w === 'closed') return 'closed';
    if (w !== 'none') return 'waiting';
    const mode = this.#framer.mode;
    return mode === 'lines' ? 'command' : 'data';
  }

  /** The shell stops reading from the socket while this is true (backpressure). */
  get isWaiting(): boolean {
    const w = this.#waiting.kind;
    return w !== 'none' && w !== 'closed';
  }

  step(input: Input): Output[] {
    const out: Output[] = [];
    if (this.#waiting.kind === 'closed') return out;
    this.#nowMs = input.nowMs;
    switch (input.type) {
      case 'connected':
        this.#onConnected(input, out);
        break;
      case 'bytes':
        this.#framer.push(input.data);
        break;
      case 'verdict':
        this.#onVerdict(input.verdict, input.nowMs, out);
        break;
      case 'committed':
        this.#onCommitted(out, input.nowMs);
        break;
      case 'commit-failed':
        this.#onCommitFailed(input.reason, out);
        break;
      case 'tls-ready':
        this.#onTlsReady(input.protocol, out);
        break;
      case 'tls-failed':
        out.push({ type: 'log', level: 'info', msg: 'TLS handshake failed', fields: { reason: input.reason } });
        this.#close(out);
        break;
      case 'timeout':
        this.#fatal(REPLY.timeout, out);
        break;
      case 'shutdown':
        this.#fatal(REPLY.shuttingDown, out);
        break;
      case 'end-of-input':
        this.#isInputEnded = true;
        break;
      case 'spool-space':
        this.#isSpoolLow = input.isLow;
        break;
      default:
        assertNever(input);
    }
    this.#pump(out, input.nowMs);
    return out;
  }

  #onConnected(input: Extract<Input, { type: 'connected' }>, out: Output[]): void {
    this.#session = newSessionSecurity({
      id: input.sessionId,
      peer: input.peer,
      local: input.local,
      isRelayClient: input.isRelayClient,
      isTls: input.isTls,
      nowMs: input.nowMs,
    });
    this.#askPolicy('connect', null, out, this.#session!.heloName, (o) => o.push({ type: 'reply', reply: REPLY.greeting(this.#cfg.hostname) }));
  }

  /** Frames and handles input until it runs out or an action must be waited for. */
  #pump(out: Output[], nowMs: number): void {
    while (this.#waiting.kind === 'none') {
      const frame = this.#framer.next();
      if (frame === null) {
        if (this.#isInputEnded) {
          if (this.#txn !== null) out.push({ type: 'log', level: 'info', msg: 'client closed the connection during a transaction' });
          this.#close(out);
        }
        return;
      }
      this.#onFrame(frame, out, nowMs);
    }
  }

  #onFrame(frame: Frame, out: Output[], nowMs: number): void {
    switch (frame.type) {
      case 'line': {
        const text = frame.line.toString('utf8');
        out.push({ type: 'log', level: 'debug', msg: 'C', fields: { line: text } });
        this.#session!.counters.commands++;
        this.#onCommandLine(text, out, nowMs);
        return;
      }
      case 'bad-line':
        out.push({ type: 'log', level: 'info', msg: 'refused command line', fields: { defect: frame.defect } });
        this.#error(REPLY.bareLineEndingCommand, out);
        return;
      case 'line-too-long':
        out.push({ type: 'log', level: 'info', msg: 'refused over-long command line', fields: { maxBytes: this.#cfg.maxCommandLineBytes } });
        this.#error(REPLY.lineTooLong, out);
        return;
      case 'data-end':
        this.#onDataEnd(out);
        return;
      case 'bdat-end':
        this.#onBdatEnd(out);
        return;
      default:
        assertNever(frame);
    }
  }

  #onCommandLine(text: string, out: Output[], nowMs: number): void {
    const parsed = parseCommand(text);
    if (!parsed.ok) {
      // Security: a BDAT we cannot parse leaves the chunk boundary unknown; reading on would run
      // the chunk's octets as commands. The only safe answer is to end the session.
      if (parsed.error === 'syntax' && parsed.usage.startsWith('BDAT')) return this.#fatal(REPLY.bdatUnparsable, out);
      this.#error(parsed.error === 'unknown' ? REPLY.unknownCommand : REPLY.syntax(parsed.usage), out);
      return;
    }
    if (this.#isRefusedAtConnect && parsed.command.verb !== 'QUIT') return this.#error(REPLY.refusedAtConnect, out);
    this.#dispatch(parsed.command, out, nowMs);
  }

  #dispatch(cmd: Command, out: Output[], nowMs: number): void {
    const cfg = this.#cfg;
    const session = this.#session!;
    switch (cmd.verb) {
      case 'EHLO':
      case 'HELO': {
        const checked = checkHelo(cfg, session, cmd.verb, cmd.domain);
        if (!checked.ok) return this.#error(checked.reply, out);
        this.#askPolicy('helo', null, out, checked.heloName, (o) => {
          session.heloName = checked.heloName;
          session.heloVerb = cmd.verb;
          this.#txn = null; // RFC 5321 4.1.4: EHLO resets like RSET
          this.#reply(cmd.verb === 'EHLO' ? ehloReply(cfg, session) : REPLY.helo(cfg.hostname), o);
        });
        return;
      }
      case 'MAIL': {
        const checked = checkMail(cfg, session, this.#txn, cmd.argument, this.#isSpoolLow);
        if (!checked.ok) {
          if (checked.isFatal) return this.#fatal(checked.reply, out);
          if (checked.isNotAnError) return this.#reply(checked.reply, out);
          return this.#error(checked.reply, out);
        }
        const seq = session.counters.transactions + 1;
        const candidate: Transaction = { ...checked.plan, seq, recipients: [], usedBdat: false, addedHeaders: [] };
        this.#askPolicy('mail', candidate, out, this.#session!.heloName, (o) => {
          session.counters.transactions = seq;
          this.#txn = candidate;
          this.#refusedBdat = null;
          this.#reply(REPLY.senderOk, o);
        });
        return;
      }
      case 'RCPT': {
        const checked = checkRcpt(cfg, session, this.#txn, cmd.argument);
        if (!checked.ok) {
          if (checked.isError) return this.#error(checked.reply, out);
          return this.#reply(checked.reply, out);
        }
        const txn = this.#txn!;
        this.#askPolicy('rcpt', checked.recipient, out, this.#session!.heloName, (o) => {
          txn.recipients.push(checked.recipient);
          session.counters.recipients++;
          this.#reply(REPLY.recipientOk, o);
        });
        return;
      }
      case 'DATA':
        return this.#onData(out);
      case 'BDAT':
        return this.#onBdat(cmd.size, cmd.isLast, out);
      case 'RSET':
        this.#txn = null;
        this.#refusedBdat = null;
        return this.#reply(REPLY.reset, out);
      case 'NOOP':
        // Anti-virus proxies keep sessions alive with NOOPs for minutes: free, never an error.
        return this.#reply(REPLY.ok, out);
      case 'QUIT':
        this.#reply(REPLY.bye, out);
        return this.#close(out);
      case 'VRFY':
        // Security: never confirm a mailbox (address harvesting).
        return this.#reply(cfg.vrfy === '252' ? REPLY.cannotVrfy : REPLY.notImplemented('VRFY'), out);
      case 'EXPN':
        return this.#reply(cfg.expn === '252' ? REPLY.cannotVrfy : REPLY.notImplemented('EXPN'), out);
      case 'HELP':
        return this.#reply(REPLY.help, out);
      case 'STARTTLS':
        return this.#onStartTls(out);
      default:
        assertNever(cmd);
    }
  }

  #onData(out: Output[]): void {
    const txn = this.#txn;
    if (txn === null) return this.#error(REPLY.needMail, out);
    if (txn.usedBdat) return this.#error(REPLY.bdatThenData, out);
    // RFC 2920 3.1: with no valid recipient, DATA gets 554 (or 503).
    if (txn.recipients.length === 0) return this.#error(REPLY.noValidRecipients, out);
    this.#scanner = this.#newScanner(true);
    this.#framer.expectData(this.#scanner);
    this.#reply(REPLY.startData, out);
  }

  #onBdat(size: number, isLast: boolean, out: Output[]): void {
    const txn = this.#txn;
    // RFC 3030 2: the chunk's octets follow the command whatever we answer; read them first.
    let refusal: Reply | null = null;
    const isRestOfRefusedMessage = txn === null && this.#refusedBdat !== null;
    if (isRestOfRefusedMessage) refusal = this.#refusedBdat;
    else if (txn === null) refusal = REPLY.needMail;
    else if (txn.recipients.length === 0) refusal = REPLY.needRcpt;
    if (refusal === null && !txn!.usedBdat) {
      txn!.usedBdat = true;
      this.#scanner = this.#newScanner(false);
    }
    if (isLast) this.#refusedBdat = null;
    this.#bdat = { size, isLast, refusal, isRestOfRefusedMessage };
    this.#framer.expectBdat(size, refusal === null ? this.#scanner : null);
  }

  #newScanner(isDotStuffed: boolean): ContentScanner {
    return new ContentScanner({
      isDotStuffed,
      maxBytes: this.#cfg.maxMessageBytes,
      maxLineBytes: this.#cfg.maxTextLineBytes,
      isNormalizing: this.#cfg.isNormalizingBareLineEndings,
    });
  }

  #onBdatEnd(out: Output[]): void {
    const bdat = this.#bdat!;
    this.#bdat = null;
    out.push({ type: 'log', level: 'debug', msg: 'C', fields: { octets: bdat.size, isLast: bdat.isLast } });
    if (bdat.refusal !== null) return bdat.isRestOfRefusedMessage ? this.#reply(bdat.refusal, out) : this.#error(bdat.refusal, out);
    const scanner = this.#scanner!;
    if (scanner.defects.tooBig) {
      if (!bdat.isLast) this.#refusedBdat = REPLY.messageTooBig;
      return this.#refuseContent(scanner, out);
    }
    if (!bdat.isLast) return this.#reply(REPLY.chunkOk(bdat.size), out);
    scanner.finish();
    this.#endOfContent(out);
  }

  #onDataEnd(out: Output[]): void {
    out.push({ type: 'log', level: 'debug', msg: 'C', fields: { octets: this.#scanner!.size, end: '.' } });
    this.#endOfContent(out);
  }

  #endOfContent(out: Output[]): void {
    const scanner = this.#scanner!;
    if (scanner.isRefused) return this.#refuseContent(scanner, out);
    const txn = this.#txn!;
    this.#askPolicy('data', null, out, this.#session!.heloName, (o, now) => this.#commit(txn, scanner, o, now));
  }

  /** Security: a body with bare CR/LF or NUL (smuggling), an over-long line or too many octets is refused after the real end of data. */
  #refuseContent(scanner: ContentScanner, out: Output[]): void {
    const d = scanner.defects;
    const r = d.tooBig ? REPLY.messageTooBig : d.longLine ? REPLY.dataLineTooLong : REPLY.bareLineEndingData;
    out.push({ type: 'log', level: 'info', msg: 'message refused', fields: { defects: { ...d }, octets: scanner.size } });
    this.#txn = null;
    this.#scanner = null;
    this.#error(r, out);
  }

  #commit(txn: Transaction, scanner: ContentScanner, out: Output[], nowMs: number): void {
    const session = this.#session!;
    const queueId = `${session.id}${txn.seq.toString(36).toUpperCase().padStart(2, '0')}`;
    const addresses = txn.recipients.map((r) => r.address);
    const received = Buffer.from(
      formatReceived({
        heloName: session.heloName,
        clientAddress: session.peer.address,
        hostname: this.#cfg.hostname,
        isEsmtp: session.heloVerb === 'EHLO',
        isTls: session.isTls,
        isUtf8: txn.smtputf8,
        queueId,
        sessionId: session.id,
        recipients: addresses,
        nowMs,
      }),
    );
    // Header fields the policy checks asked for (Received-SPF, Authentication-Results) go above
    // our Received field (RFC 7208 9.1, RFC 8601 2.1). Security: an incoming
    // Authentication-Results field that claims our name is renamed (RFC 8601 5), so nobody behind
    // us trusts a forged "spf=pass".
    const added = txn.addedHeaders.length === 0 ? null : Buffer.from(txn.addedHeaders.map((h) => `${h}\r\n`).join(''));
    const content = renameForgedAuthResults(scanner.chunks, this.#cfg.hostname);
    const body = added === null ? [received, ...content] : [added, received, ...content];
    let size = 0;
    for (const b of body) size += b.length;
    const envelope: Envelope = {
      version: 1,
      queueId,
      sessionId: session.id,
      receivedAt: new Date(nowMs).toISOString(),
      client: { address: session.peer.address, port: session.peer.port, heloName: session.heloName, isTls: session.isTls },
      reversePath: txn.reversePath === null ? '' : `${txn.reversePath.localPart}@${txn.reversePath.domain}`,
      body: txn.body,
      smtputf8: txn.smtputf8,
      ...(txn.ret !== undefined ? { ret: txn.ret } : {}),
      ...(txn.envid !== undefined ? { envid: txn.envid } : {}),
      recipients: txn.recipients.map((r) => ({
        address: r.address,
        ...(r.notify !== undefined ? { notify: r.notify } : {}),
        ...(r.orcpt !== undefined ? { orcpt: r.orcpt } : {}),
      })),
      size,
    };
    this.#scanner = null;
    this.#waiting = { kind: 'commit', queueId, envelope };
    out.push({ type: 'commit', envelope, body });
  }

  #onCommitted(out: Output[], _nowMs: number): void {
    const w = this.#waiting;
    if (w.kind !== 'commit') throw new Error('committed while not waiting for a commit');
    this.#waiting = { kind: 'none' };
    this.#txn = null;
    this.#session!.counters.messages++;
    const e = w.envelope;
    out.push({
      type: 'log',
      level: 'info',
      msg: 'message accepted',
      fields: { queueId: w.queueId, from: e.reversePath, recipients: e.recipients.length, size: e.size },
    });
    this.#reply(REPLY.queued(w.queueId), out);
  }

  #onCommitFailed(reason: string, out: Output[]): void {
    if (this.#waiting.kind !== 'commit') throw new Error('commit-failed while not waiting for a commit');
    this.#waiting = { kind: 'none' };
    this.#txn = null;
    out.push({ type: 'log', level: 'warn', msg: 'spool commit failed', fields: { reason } });
    this.#reply(REPLY.storageFailed, out);
  }

  #onStartTls(out: Output[]): void {
    const session = this.#session!;
    if (!this.#cfg.isTlsAvailable) return this.#error(REPLY.notImplemented('STARTTLS'), out);
    if (session.isTls) return this.#error(REPLY.alreadyTls, out);
    if (this.#txn !== null) return this.#error(REPLY.tlsInTransaction, out);
    this.#reply(REPLY.startTls, out);
    // Security: RFC 3207 5 and the STARTTLS command-injection class: whatever the client sent
    // after the STARTTLS line, before the handshake, is thrown away, never executed.
    const dropped = this.#framer.discardBuffered();
    if (dropped > 0) out.push({ type: 'log', level: 'info', msg: 'discarded octets pipelined after STARTTLS', fields: { octets: dropped } });
    this.#waiting = { kind: 'tls' };
    out.push({ type: 'start-tls' });
  }

  #onTlsReady(protocol: string, out: Output[]): void {
    if (this.#waiting.kind !== 'tls') throw new Error('tls-ready while not waiting for TLS');
    this.#waiting = { kind: 'none' };
    const session = this.#session!;
    // RFC 3207 4.2: forget everything learnt before TLS; the client must EHLO again.
    session.isTls = true;
    session.tlsProtocol = protocol;
    session.heloName = null;
    session.heloVerb = null;
    this.#txn = null;
    this.#framer.discardBuffered();
    out.push({ type: 'log', level: 'debug', msg: 'TLS established', fields: { protocol } });
  }

  /**
   * Runs `apply` now when no policy check is configured for the stage, otherwise asks the shell
   * and runs it when the verdict is "continue" or "accept".
   */
  #askPolicy(
    stage: PolicyStage,
    subject: Transaction | TransactionRecipient | null,
    out: Output[],
    heloName: string | null,
    apply: (out: Output[], nowMs: number) => void,
  ): void {
    if (!this.#cfg.policyStages.has(stage)) {
      apply(out, this.#nowMs);
      return;
    }
    const isTxn = subject !== null && 'seq' in subject;
    out.push({
      type: 'policy',
      stage,
      session: this.#session!,
      transaction: isTxn ? subject : this.#txn,
      recipient: subject !== null && !isTxn ? subject : null,
      heloName,
    });
    this.#waiting = { kind: 'policy', stage, txn: isTxn ? subject : this.#txn, onContinue: apply };
  }

  #onVerdict(verdict: PolicyVerdict, nowMs: number, out: Output[]): void {
    const w = this.#waiting;
    if (w.kind !== 'policy') throw new Error('verdict while not waiting for one');
    this.#waiting = { kind: 'none' };
    if (verdict.action === 'continue' || verdict.action === 'accept') {
      if (verdict.headers !== undefined && w.txn !== null) w.txn.addedHeaders.push(...verdict.headers);
      w.onContinue(out, nowMs);
      return;
    }
    const session = this.#session!;
    session.verdicts.push({
      stage: w.stage,
      action: verdict.action,
      check: verdict.check,
      reason: verdict.reason,
      key: verdict.key ?? '',
      reply: verdict.reply,
      atMs: nowMs,
    });
    out.push({ type: 'log', level: 'info', msg: 'policy verdict', fields: { stage: w.stage, action: verdict.action, check: verdict.check, reason: verdict.reason, key: verdict.key } });
    if (w.stage === 'data') {
      this.#txn = null;
      this.#scanner = null;
    }
    if (w.stage === 'connect') this.#isRefusedAtConnect = true;
    if (verdict.action === 'disconnect') return this.#fatal(verdict.reply, out);
    // A refusal also counts toward the error limit (an unknown recipient is a client error).
    this.#error(verdict.reply, out);
    // Security: a client that keeps collecting refusals (retrying past a greylist or a block
    // list within one session) is not served further.
    if (this.phase !== 'closed' && session.verdicts.length >= this.#cfg.maxPolicyRefusals) this.#fatal(REPLY.tooManyRefusals, out);
  }

  #reply(reply: Reply, out: Output[]): void {
    out.push({ type: 'reply', reply });
  }

  /** A client error: answered, counted, and past the limit the session ends (421 4.7.0). */
  #error(reply: Reply, out: Output[]): void {
    const session = this.#session!;
    session.counters.errors++;
    this.#reply(reply, out);
    if (session.counters.errors >= this.#cfg.maxErrors) this.#fatal(REPLY.tooManyErrors, out);
  }

  #fatal(reply: Reply, out: Output[]): void {
    this.#reply(reply, out);
    this.#close(out);
  }

  #close(out: Output[]): void {
    this.#waiting = { kind: 'closed' };
    this.#txn = null;
    this.#scanner = null;
    out.push({ type: 'close' });
  }
}
