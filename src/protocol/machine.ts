// The sans-I/O SMTP session machine: inputs (bytes, verdicts, spool answers, TLS, time) in,
// outputs (replies, actions) out. No sockets, no timers, no clock reads, no randomness.
// Rule 1: while an action is outstanding (policy, commit, TLS) no further input is framed; the
// rest of a pipelined batch waits in the framer and is answered strictly in order afterwards.
// RFC 5321 (4.1.1 commands, 4.3.2 sequences), RFC 2920 (PIPELINING), RFC 3030 (CHUNKING),
// RFC 3207 (STARTTLS).

import { assertNever, COMMAND_FACTS, loggableLine, parseCommand, type Command } from './command.ts';
import { applyBdat, checkBdat, endBdatChunk } from './commands/bdat.ts';
import { applyData, checkData, contentRefusal } from './commands/data.ts';
import { applyHelo, checkHelo } from './commands/ehlo.ts';
import { applyMail, checkMail, newTransaction } from './commands/mail.ts';
import { applyRcpt, checkRcpt } from './commands/rcpt.ts';
import { applyTlsReady, checkStartTls } from './commands/starttls.ts';
import { formatMailbox } from './address.ts';
import { Framer, type ContentScanner, type Frame } from './framing.ts';
import { tarpitDelayMs, type MachineDefenseRule } from './deadlines.ts';
import type { Input, Output, Phase } from './io.ts';
import { DEFAULT_BODY_MEMORY_BYTES, type MachineConfig } from './machine-config.ts';
import type { AcceptedMessage } from '../message/accepted.ts';
import { finishMessage, prepareMessage, preparedFields, type PreparedMessage } from '../message/assemble.ts';
import { headerSection, splitAt } from '../message/header.ts';
import { hasTooManyHops } from '../message/hops.ts';
import type { MessageEdits } from '../message/edits.ts';
import { REPLY, type Reply } from './replies.ts';
import { applyReset, type ResetEvent } from './reset.ts';
import {
  newSessionSecurity,
  queueIdFor,
  type SessionSecurity,
  type Transaction,
  type TransactionRecipient,
  type TransactionSlot,
} from './session.ts';
import type { PolicyStage, PolicyVerdict } from './verdict.ts';

export type { Input, LogLevel, Output, Phase, PolicyRequest } from './io.ts';
export type { PolicyVerdict } from './verdict.ts';

/** Body octets gathered before they go to the body file (and between looks for a header's end). */
const SPILL_STEP_BYTES = 64 * 1024;
/** Reply lines answered from one read of pipelined input before the machine stops and waits for
 *  the shell to say they have gone out (output-drained). Security: without it one 64 KiB read of
 *  `EHLO a` lines (8 octets each, about 150 octets of reply) was answered whole, a 1.2 MB reply
 *  queued at once per connection whatever the client read; now a batch is at most a few KiB. */
const MAX_REPLY_LINES_PER_BATCH = 256;

/** What a policy verdict is about: the transaction a MAIL would open, or a recipient. */
type PolicySubject =
  | { kind: 'none' }
  | { kind: 'transaction'; txn: Transaction }
  | { kind: 'recipient'; recipient: TransactionRecipient }
  | { kind: 'message'; message: PreparedMessage };

type Waiting =
  | { kind: 'none' }
  | { kind: 'policy'; stage: PolicyStage; txn: Transaction | null; onContinue: (out: Output[], nowMs: number, edits: MessageEdits | undefined) => void }
  | { kind: 'transform'; message: AcceptedMessage }
  | { kind: 'commit'; message: AcceptedMessage }
  | { kind: 'tls' }
  /** An error reply is held back (tarpit) until `untilMs`; pipelined input waits in the framer. */
  | { kind: 'tarpit'; untilMs: number }
  | { kind: 'closed' };

/** The waits that carry nothing, shared (a silent session holds one of them; no object each). */
const NOT_WAITING: Waiting = Object.freeze({ kind: 'none' });
const CLOSED: Waiting = Object.freeze({ kind: 'closed' });
const WAITING_TLS: Waiting = Object.freeze({ kind: 'tls' });

export class SmtpMachine {
  readonly #cfg: MachineConfig;
  readonly #framer: Framer;
  #session: SessionSecurity | null = null;
  /** The transaction, or what is left of a refused BDAT message, or nothing (reset.ts). */
  #slot: TransactionSlot = null;
  #waiting: Waiting = NOT_WAITING;
  /** The client half-closed: finish the outstanding action and the complete commands already
   *  received (their replies can still be written), then close. */
  #isInputEnded = false;
  /** 554 mode after a connect-stage refusal (RFC 5321 3.1): the reply every command but QUIT
   *  gets (503 5.7.0; the refusal's own after a begun greeting), or null when not refused. */
  #refusedReply: Reply | null = null;
  /** The shell sent `220-` before the session (pregreet): the greeting's code is 220 already. */
  #isGreetingBegun = false;
  /** When the connect-stage refusal was sent, and the commands answered since (554 mode's bounds). */
  #refusedSinceMs = 0;
  #refusedCommands = 0;
  /** The spool is below its free-space floor (fed by the shell): MAIL gets 452 4.3.1. */
  #isSpoolLow = false;
  /** A graceful stop came while a message was arriving: its data is read and answered, then 421. */
  #isDraining = false;
  /** Reply lines of the current batch (since the last read or output-drained). */
  #batchReplyLines = 0;
  #isHeldForOutput = false;
  /** Time of the input being handled: the only clock the core knows. */
  #nowMs = 0;
  /** Deadlines (deadlines.ts): when the session began, when input last came (or an action ended). */
  #connectedMs = 0;
  #activityMs = 0;
  /** When the first octet of the command line not yet complete arrived; null: none pending. */
  #lineStartMs: number | null = null;
  /** The data-rate window of the message arriving: its start and the octets read in it. */
  #rateStartMs: number | null = null;
  #rateBytes = 0;
  #isStressed = false;
  /** Junk commands (NOOP, RSET, VRFY, EXPN, HELP) since the last transaction opened. */
  #idleCommands = 0;
  /** Errors a remembered tarpit starts the session with (so the first error is already delayed). */
  #tarpitHeadStart = 0;
  /** Outputs held back by the tarpit until Waiting.untilMs (a reply and what followed it). */
  #held: Output[] | null = null;
  /** Where in this step's outputs the held part begins (set by #error), or -1. */
  #holdFrom = -1;
  #holdUntilMs = 0;

  constructor(cfg: MachineConfig) {
    this.#cfg = cfg;
    this.#framer = new Framer(cfg.maxCommandLineBytes);
  }

  get session(): Readonly<SessionSecurity> | null {
    return this.#session;
  }

  /** The open transaction, if any. */
  get transaction(): Readonly<Transaction> | null {
    const slot = this.#slot;
    return slot !== null && slot.kind === 'open' ? slot : null;
  }

  /**
   * The connection is gone without the machine's knowing (a socket error, a reset, our bug): the
   * transaction's share of the body budget goes back, and nothing is served any more. The shell
   * calls it once its connection has ended, whatever the machine's state; calling it again, or
   * after the machine closed, does nothing.
   */
  dispose(): void {
    const txn = this.#openTransaction();
    if (txn !== null) this.#releaseBody(txn);
    this.#slot = null;
    this.#waiting = CLOSED;
  }

  #openTransaction(): Transaction | null {
    const slot = this.#slot;
    return slot !== null && slot.kind === 'open' ? slot : null;
  }

  /** DATA or BDAT has begun and the message's last octet has not arrived yet. */
  #isMessageArriving(): boolean {
    const txn = this.#openTransaction();
    return txn !== null && txn.content !== null;
  }

  /** The session reached the tarpit (an error reply was delayed): the shell remembers its network. */
  get isTarpitted(): boolean {
    const t = this.#cfg.tarpit;
    return t !== undefined && this.#session !== null && tarpitDelayMs(t, this.#session.counters.errors + this.#tarpitHeadStart) > 0;
  }

  /**
   * When the shell must step a `tick` at the latest (ms, the inputs' clock), or Infinity. The
   * shell keeps one timer-wheel entry per connection at this time; ticks sooner are harmless.
   */
  get nextDeadlineMs(): number {
    const w = this.#waiting;
    if (this.#held !== null) return this.#holdUntilMs;
    if (w.kind === 'closed' || this.#session === null) return Infinity;
    const bound = this.#cfg.refusedSession;
    const refusedDue = this.#refusedReply !== null && bound !== undefined ? this.#refusedSinceMs + bound.maxMs : Infinity;
    const lim = this.#cfg.limits;
    if (lim === undefined) return refusedDue;
    let due = Math.min(refusedDue, lim.sessionMaxMs > 0 ? this.#connectedMs + lim.sessionMaxMs : Infinity);
    // While an action is outstanding its own bound (the shell's) applies, not the client's timeouts.
    if (w.kind !== 'none') return due;
    const cap = this.#isStressed ? lim.stressTimeoutMs : Infinity;
    const isData = this.#framer.mode !== 'lines';
    due = Math.min(due, this.#activityMs + Math.min(isData ? lim.dataTimeoutMs : lim.commandTimeoutMs, cap));
    if (this.#lineStartMs !== null && lim.commandDeadlineMs > 0) due = Math.min(due, this.#lineStartMs + Math.min(lim.commandDeadlineMs, cap));
    if (this.#rateStartMs !== null) due = Math.min(due, this.#rateStartMs + lim.minDataRateWindowMs);
    return due;
  }

  get phase(): Phase {
    const w = this.#waiting.kind;
    if (w === 'closed') return this.#held !== null ? 'waiting' : 'closed';
    if (w !== 'none') return 'waiting';
    const mode = this.#framer.mode;
    return mode === 'lines' ? 'command' : 'data';
  }

  /** Complete commands may be left unanswered: the batch's replies reached their cap. The shell
   *  stops reading and steps output-drained once what it wrote has gone out. */
  get isHeldForOutput(): boolean {
    return this.#isHeldForOutput;
  }

  /** The shell stops reading from the socket while this is true (backpressure). */
  get isWaiting(): boolean {
    const w = this.#waiting.kind;
    return w !== 'none' && w !== 'closed';
  }

  step(input: Input): Output[] {
    const out: Output[] = [];
    this.#nowMs = input.nowMs;
    if (this.#held !== null) {
      // Tarpit: what is held goes out once its time has come, or at once when the session must end.
      const isEnding = input.type === 'shutdown' || input.type === 'timeout';
      if (input.nowMs < this.#holdUntilMs && !isEnding) {
        if (input.type === 'bytes') this.#framer.push(input.data);
        else if (input.type === 'end-of-input') this.#isInputEnded = true;
        else if (input.type === 'stress') this.#isStressed = input.isOn;
        else if (input.type === 'tarpit-remembered' && this.#cfg.tarpit !== undefined) this.#tarpitHeadStart = this.#cfg.tarpit.freeErrors;
        return out;
      }
      out.push(...this.#held);
      this.#held = null;
      if (this.#waiting.kind === 'tarpit') this.#waiting = NOT_WAITING;
      this.#activityMs = input.nowMs;
    }
    if (this.#waiting.kind === 'closed') return out;
    if (input.type !== 'tick' && input.type !== 'stress' && input.type !== 'tarpit-remembered') this.#activityMs = input.nowMs;
    switch (input.type) {
      case 'connected':
        this.#onConnected(input, out);
        break;
      case 'bytes':
        if (this.#rateStartMs !== null) this.#rateBytes += input.data.length;
        this.#framer.push(input.data);
        if (!this.#isHeldForOutput) this.#batchReplyLines = 0;
        break;
      case 'output-drained':
        this.#isHeldForOutput = false;
        this.#batchReplyLines = 0;
        break;
      case 'tick':
        this.#judgeDeadlines(out);
        break;
      case 'stress':
        this.#isStressed = input.isOn;
        break;
      case 'tarpit-remembered':
        if (this.#cfg.tarpit !== undefined) this.#tarpitHeadStart = this.#cfg.tarpit.freeErrors;
        break;
      case 'verdict':
        this.#onVerdict(input.verdict, input.nowMs, out);
        break;
      case 'committed':
        this.#onCommitted(out);
        break;
      case 'transformed':
      case 'transform-failed':
        this.#onTransformed(input, out);
        break;
      case 'commit-failed':
        this.#onCommitFailed(input.reason, out);
        break;
      case 'tls-ready':
        this.#onTlsReady(input, out);
        break;
      case 'tls-failed':
        out.push({ type: 'log', level: 'info', msg: 'TLS handshake failed', fields: { reason: input.reason } });
        this.#close(out);
        break;
      case 'timeout':
        this.#fatal(REPLY.timeout, out);
        break;
      case 'shutdown':
        // A client in the middle of its data finishes the message (bounded by the data timeout
        // and the shell's stop deadline) instead of having to send it all again.
        if (this.#isMessageArriving()) {
          if (!this.#isDraining) out.push({ type: 'log', level: 'info', msg: 'stop deferred until the message in progress ends' });
          this.#isDraining = true;
        } else this.#fatal(REPLY.shuttingDown, out);
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
    this.#pump(out);
    if (this.#isDraining && this.#waiting.kind === 'none' && !this.#isMessageArriving()) this.#fatal(REPLY.shuttingDown, out);
    this.#trackDeadlines();
    if (this.#holdFrom !== -1) {
      // Tarpit: the delayed reply and everything after it wait for their time (a tick).
      this.#held = out.splice(this.#holdFrom);
      this.#holdFrom = -1;
    }
    // Memory per session stays bounded whatever the message size: past the threshold, what the
    // scanner kept goes to the body file in steps as it arrives.
    const txn = this.#openTransaction();
    if (txn !== null && txn.content !== null && txn.reader.kind !== 'command') this.#spill(txn, out);
    return out;
  }

  /** Moves the content held in memory to the body file once it is over the threshold, or once
   *  the process-wide body budget has no room for it (or once the body is already there). The
   *  header section stays in memory: assembly edits it.
   *  `isFinal`: the end of the content, when nothing may stay behind. */
  #spill(txn: Transaction, out: Output[], isFinal = false): void {
    const scanner = txn.content!;
    // A refused body keeps nothing (framing.ts), so it holds none of the budget either.
    if (scanner.isRefused) return this.#releaseBody(txn);
    const held = scanner.heldBytes;
    if (txn.spilled === null) {
      const threshold = this.#cfg.bodyMemoryBytes ?? DEFAULT_BODY_MEMORY_BYTES;
      // What is held is reserved from the budget as it grows; a body that does not fit goes to
      // its file now, before its own threshold, so the sum over all sessions stays bounded.
      const isOverBudget = !this.#reserveBody(txn, held);
      // A client that declared a size past the threshold (RFC 1870 SIZE) sends a large message:
      // its body goes to the file as soon as its header section is complete. Security: the
      // header end is looked for again only every SPILL_STEP_BYTES, so a header trickled in
      // tiny reads costs neither a search of everything held per read nor a view per read. The
      // same holds for a body over the budget (first looked at once, and at its end).
      const isProbeDue = held >= txn.headerProbeBytes + SPILL_STEP_BYTES;
      const isDeclaredLarge = txn.declaredSize !== null && txn.declaredSize > threshold;
      if (held < threshold) {
        if (isOverBudget ? !(isProbeDue || isFinal || txn.headerProbeBytes === 0) : !(isDeclaredLarge && isProbeDue)) return;
      }
      const chunks = scanner.takeChunks();
      const section = headerSection(chunks);
      if (held < threshold && !section.hasSeparator) {
        // The header section has not ended yet: keep holding what came (it is small).
        scanner.giveBack(chunks);
        txn.headerProbeBytes = held;
        return;
      }
      // Security: a header section that does not end within the threshold would have to be held
      // whole (assembly edits it); such a message is refused at its end (552 5.3.4).
      if (section.bytes > 0 && !section.hasSeparator) {
        scanner.refuseHeader();
        return this.#releaseBody(txn);
      }
      const { head, rest } = splitAt(chunks, section.bytes);
      txn.spilled = { header: Buffer.concat(head), bytes: 0 };
      this.#releaseBody(txn);
      this.#appendBody(txn, rest, out);
      return;
    }
    // Appends go out in steps, not per read: a client sending tiny reads costs one write per step.
    if (!isFinal && held < SPILL_STEP_BYTES) return;
    this.#appendBody(txn, scanner.takeChunks(), out);
  }

  /** Reserves from the body budget what the content holds beyond its reservation; false when
   *  the budget has no room (nothing more is reserved then). Two integer operations per read. */
  #reserveBody(txn: Transaction, held: number): boolean {
    const budget = this.#cfg.bodyBudget;
    if (budget === undefined || held <= txn.reservedBytes) return true;
    if (!budget.reserve(held - txn.reservedBytes)) return false;
    txn.reservedBytes = held;
    return true;
  }

  /** Gives the content's reservation back: it spilled, was refused, or its transaction ended. */
  #releaseBody(txn: Transaction): void {
    if (txn.reservedBytes === 0) return;
    this.#cfg.bodyBudget!.release(txn.reservedBytes);
    txn.reservedBytes = 0;
  }

  #appendBody(txn: Transaction, chunks: Buffer[], out: Output[]): void {
    if (chunks.length === 0) return;
    for (const c of chunks) txn.spilled!.bytes += c.length;
    out.push({ type: 'append-body', seq: txn.seq, chunks });
  }

  #onConnected(input: Extract<Input, { type: 'connected' }>, out: Output[]): void {
    this.#connectedMs = input.nowMs;
    this.#isGreetingBegun = input.isGreetingBegun === true;
    this.#session = newSessionSecurity({
      id: input.sessionId,
      peer: input.peer,
      local: input.local,
      proxy: input.proxy ?? null,
      isRelayClient: input.isRelayClient,
      tls: input.tls ?? null,
      nowMs: input.nowMs,
    });
    const refusal = input.refusal ?? null;
    if (refusal !== null) {
      // RFC 5321 3.1: 554 in place of the greeting; no connect-stage check runs for this client.
      out.push({ type: 'reply', reply: refusal });
      this.#enterRefusedMode(input.nowMs);
      return;
    }
    this.#askPolicy('connect', { kind: 'none' }, out, null, (o) => o.push({ type: 'reply', reply: REPLY.greeting(this.#cfg.hostname) }));
  }

  /** Frames and handles input until it runs out or an action must be waited for. */
  #pump(out: Output[]): void {
    while (this.#waiting.kind === 'none') {
      if (this.#batchReplyLines >= MAX_REPLY_LINES_PER_BATCH) {
        this.#isHeldForOutput = true;
        return;
      }
      const frame = this.#framer.next();
      if (frame === null) {
        if (this.#isInputEnded) {
          if (this.transaction !== null) out.push({ type: 'log', level: 'info', msg: 'client closed the connection during a transaction' });
          this.#close(out);
        }
        return;
      }
      const from = out.length;
      this.#onFrame(frame, out);
      for (let k = from; k < out.length; k++) {
        const o = out[k];
        if (o.type === 'reply') this.#batchReplyLines += o.reply.lines.length;
      }
    }
  }

  #onFrame(frame: Frame, out: Output[]): void {
    switch (frame.type) {
      case 'line': {
        const text = frame.line.toString('utf8');
        if (this.#cfg.logCommands !== false) out.push({ type: 'log', level: 'debug', msg: 'C', fields: { line: loggableLine(text) } });
        this.#session!.counters.commands++;
        this.#onCommandLine(text, out);
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

  #onCommandLine(text: string, out: Output[]): void {
    const parsed = parseCommand(text);
    if (!parsed.ok) {
      // Security: a BDAT we cannot parse leaves the chunk boundary unknown; reading on would run
      // the chunk's octets as commands. The only safe answer is to end the session.
      if (parsed.error === 'syntax' && parsed.usage.startsWith('BDAT')) return this.#fatal(REPLY.bdatUnparsable, out);
      this.#error(parsed.error === 'unknown' ? REPLY.unknownCommand : REPLY.syntax(parsed.usage), out);
      return;
    }
    if (COMMAND_FACTS[parsed.command.verb].isJunk) {
      this.#session!.counters.junk++;
      // Security: commands that move nothing forward are capped, counted only since the last
      // transaction opened, so an anti-virus proxy's keep-alive NOOPs between messages and
      // RSET before each MAIL never reach the cap.
      const max = this.#cfg.maxIdleCommands;
      if (max !== undefined && max > 0 && this.#openTransaction() === null && ++this.#idleCommands > max) {
        out.push({ type: 'defense', rule: 'idle_commands', limit: max, value: this.#idleCommands, reply: REPLY.tooManyIdleCommands });
        return this.#fatal(REPLY.tooManyIdleCommands, out);
      }
    }
    const refused = this.#refusedReply;
    if (refused !== null && parsed.command.verb !== 'QUIT') {
      const bound = this.#cfg.refusedSession;
      if (bound === undefined) return this.#error(refused, out);
      // Security: 554 mode never holds a client that will not QUIT: a few commands, then close.
      if (++this.#refusedCommands >= bound.maxCommands) {
        out.push({ type: 'defense', rule: 'refused_session_closed', limit: bound.maxCommands, value: `${this.#refusedCommands} commands`, reply: REPLY.refusedSessionOver });
        return this.#fatal(REPLY.refusedSessionOver, out);
      }
      // Not an error that counts toward the tarpit: nothing is delayed for a refused client.
      out.push({ type: 'reply', reply: refused });
      return;
    }
    this.#dispatch(parsed.command, out);
    if (this.#openTransaction() !== null) this.#idleCommands = 0;
  }

  /** After each input: when the pending command line began, and the data-rate window. */
  #trackDeadlines(): void {
    if (this.#waiting.kind !== 'none') return;
    const isLines = this.#framer.mode === 'lines';
    if (isLines && this.#framer.bufferedBytes > 0) this.#lineStartMs ??= this.#nowMs;
    else this.#lineStartMs = null;
    const lim = this.#cfg.limits;
    if (isLines || lim === undefined || lim.minDataRateBytes <= 0) {
      this.#rateStartMs = null;
    } else if (this.#rateStartMs === null) {
      this.#rateStartMs = this.#nowMs;
      this.#rateBytes = 0;
    }
  }

  /** A tick: ends the session whose time is up, most specific rule first. */
  #enterRefusedMode(nowMs: number, reply: Reply = REPLY.refusedAtConnect): void {
    this.#refusedReply = reply;
    this.#refusedSinceMs = nowMs;
    this.#refusedCommands = 0;
  }

  #judgeDeadlines(out: Output[]): void {
    const bound = this.#cfg.refusedSession;
    if (this.#refusedReply !== null && bound !== undefined && this.#session !== null && this.#nowMs >= this.#refusedSinceMs + bound.maxMs) {
      out.push({ type: 'defense', rule: 'refused_session_closed', limit: `${bound.maxMs / 1000}s`, value: `${Math.round((this.#nowMs - this.#refusedSinceMs) / 1000)}s`, reply: REPLY.refusedSessionOver });
      return this.#fatal(REPLY.refusedSessionOver, out);
    }
    const lim = this.#cfg.limits;
    if (lim === undefined || this.#session === null) return;
    const now = this.#nowMs;
    const cap = this.#isStressed ? lim.stressTimeoutMs : Infinity;
    const stressNote = this.#isStressed ? ' (stress)' : '';
    if (lim.sessionMaxMs > 0 && now >= this.#connectedMs + lim.sessionMaxMs) {
      out.push({ type: 'defense', rule: 'session_max', limit: `${lim.sessionMaxMs / 1000}s`, value: `${Math.round((now - this.#connectedMs) / 1000)}s`, reply: REPLY.sessionTooLong });
      return this.#fatal(REPLY.sessionTooLong, out);
    }
    if (this.#waiting.kind !== 'none') return;
    const commandDeadline = Math.min(lim.commandDeadlineMs, cap);
    if (this.#lineStartMs !== null && lim.commandDeadlineMs > 0 && now >= this.#lineStartMs + commandDeadline) {
      out.push({ type: 'defense', rule: 'command_deadline', limit: `${commandDeadline / 1000}s${stressNote}`, value: this.#framer.bufferedBytes, reply: REPLY.timeout });
      return this.#fatal(REPLY.timeout, out);
    }
    if (this.#rateStartMs !== null && now >= this.#rateStartMs + lim.minDataRateWindowMs) {
      if (this.#rateBytes < lim.minDataRateBytes) {
        out.push({ type: 'defense', rule: 'min_data_rate', limit: `${lim.minDataRateBytes}/${lim.minDataRateWindowMs / 1000}s`, value: this.#rateBytes, reply: REPLY.timeout });
        return this.#fatal(REPLY.timeout, out);
      }
      this.#rateStartMs = now;
      this.#rateBytes = 0;
    }
    const idle = Math.min(this.#framer.mode === 'lines' ? lim.commandTimeoutMs : lim.dataTimeoutMs, cap);
    if (now >= this.#activityMs + idle) {
      out.push({ type: 'log', level: 'info', msg: `timeout${stressNote}`, fields: { idleMs: now - this.#activityMs, limitMs: idle, phase: this.#framer.mode } });
      this.#fatal(REPLY.timeout, out);
    }
  }

  #dispatch(cmd: Command, out: Output[]): void {
    const cfg = this.#cfg;
    const session = this.#session!;
    switch (cmd.verb) {
      case 'EHLO':
      case 'HELO': {
        const checked = checkHelo(cfg, session, cmd.verb, cmd.domain);
        // A refused HELO/EHLO changes nothing (reset.ts: ehloRefused), here and after policy.
        if (!checked.ok) return this.#error(checked.reply, out);
        this.#askPolicy('helo', { kind: 'none' }, out, checked.heloName, (o) => {
          const before = this.#openTransaction();
          const applied = applyHelo(cfg, session, this.#slot, { verb: cmd.verb, name: checked.heloName });
          this.#slot = applied.slot;
          if (before !== null) this.#dropped(before, o);
          this.#reply(applied.reply, o);
        });
        return;
      }
      case 'MAIL': {
        const checked = checkMail(cfg, session, this.#slot, cmd.argument, this.#isSpoolLow);
        if (!checked.ok) {
          if (checked.isFatal) return this.#fatal(checked.reply, out);
          if (checked.isNotAnError) return this.#reply(checked.reply, out);
          return this.#error(checked.reply, out);
        }
        const candidate = newTransaction(session, checked.plan);
        this.#askPolicy('mail', { kind: 'transaction', txn: candidate }, out, session.helo?.name ?? null, (o) => {
          const applied = applyMail(session, candidate);
          this.#slot = applied.slot;
          this.#reply(applied.reply, o);
        });
        return;
      }
      case 'RCPT': {
        const checked = checkRcpt(cfg, session, this.#slot, cmd.argument);
        if (!checked.ok) {
          if (checked.isError) return this.#error(checked.reply, out);
          return this.#reply(checked.reply, out);
        }
        const txn = this.#openTransaction()!;
        this.#askPolicy('rcpt', { kind: 'recipient', recipient: checked.recipient }, out, session.helo?.name ?? null, (o) => {
          this.#reply(applyRcpt(session, txn, checked.recipient), o);
        });
        return;
      }
      case 'DATA': {
        const checked = checkData(this.#slot);
        if (!checked.ok) return this.#error(checked.reply, out);
        this.#framer.expectData(applyData(cfg, checked.txn));
        return this.#reply(REPLY.startData, out);
      }
      case 'BDAT': {
        // RFC 3030 2: the chunk's octets follow the command whatever we answer; read them first.
        const plan = checkBdat(cfg, this.#slot, cmd.size, cmd.isLast);
        applyBdat(plan);
        this.#slot = plan.slot;
        this.#framer.expectBdat(cmd.size, plan.scanner);
        return;
      }
      case 'RSET':
        this.#reset('rset', out);
        return this.#reply(REPLY.reset, out);
      case 'NOOP':
        // Anti-virus proxies keep sessions alive with NOOPs for minutes: never an error.
        return this.#reply(REPLY.ok, out);
      case 'QUIT':
        this.#reply(REPLY.bye, out);
        return this.#close(out, true);
      case 'VRFY':
        // Security: never confirm a mailbox (address harvesting).
        return this.#reply(cfg.vrfy === '252' ? REPLY.cannotVrfy : REPLY.notImplemented('VRFY'), out);
      case 'EXPN':
        return this.#reply(cfg.expn === '252' ? REPLY.cannotVrfy : REPLY.notImplemented('EXPN'), out);
      case 'HELP':
        return this.#reply(REPLY.help, out);
      case 'STARTTLS':
        return this.#onStartTls(out);
      case 'AUTH':
        // Not advertised (no submission yet): RFC 4954 4, a server without AUTH answers it as unknown to it.
        return this.#error(REPLY.notImplemented('AUTH'), out);
      default:
        assertNever(cmd);
    }
  }

  /** Applies a row of the reset table (reset.ts) to the session and the transaction slot. */
  #reset(event: ResetEvent, out: Output[]): void {
    const before = this.#openTransaction();
    this.#slot = applyReset(event, this.#session!, this.#slot);
    if (before !== null && this.#slot !== before) this.#dropped(before, out);
  }

  /** A transaction is gone: its body file (if its content went to one) goes too, and what its
   *  content held of the body budget goes back (RSET, end of data whatever the reply, close). */
  #dropped(txn: Transaction, out: Output[]): void {
    this.#releaseBody(txn);
    if (txn.spilled !== null) out.push({ type: 'discard-body', seq: txn.seq });
  }

  #onBdatEnd(out: Output[]): void {
    const slot = this.#slot;
    if (slot === null) throw new Error('end of a BDAT chunk with no transaction slot');
    const reader = slot.reader;
    if (this.#cfg.logCommands !== false) out.push({ type: 'log', level: 'debug', msg: 'C', fields: { octets: reader.kind === 'bdat' || reader.kind === 'skip-bdat' ? reader.chunkBytes : 0, isLast: 'isLast' in reader && reader.isLast } });
    const end = endBdatChunk(slot);
    switch (end.kind) {
      case 'skipped':
        this.#slot = end.slot;
        return end.isCounted ? this.#error(end.reply, out) : this.#reply(end.reply, out);
      case 'too-big':
        this.#refuseContent(end.scanner, out);
        // The rest of its chunks get the same refusal (set after the reset of the refusal).
        this.#slot = end.slot;
        return;
      case 'chunk':
        this.#spill(this.#openTransaction()!, out);
        return this.#reply(end.reply, out);
      case 'last':
        return this.#endOfContent(end.scanner, out);
      default:
        assertNever(end);
    }
  }

  #onDataEnd(out: Output[]): void {
    const txn = this.#openTransaction()!;
    const scanner = txn.content!;
    txn.reader = { kind: 'command' };
    if (this.#cfg.logCommands !== false) out.push({ type: 'log', level: 'debug', msg: 'C', fields: { octets: scanner.size, end: '.' } });
    this.#endOfContent(scanner, out);
  }

  #endOfContent(scanner: ContentScanner, out: Output[]): void {
    const txn = this.#openTransaction()!;
    this.#spill(txn, out, true);
    // RFC 5321 6.3: a message past the hop limit is in a loop; refused here, in the session, it
    // is never accepted and bounced. The header section is in memory either way (spilled or not).
    if (!scanner.isRefused && hasTooManyHops(txn.spilled === null ? scanner.chunks : [txn.spilled.header])) scanner.refuseHops();
    if (contentRefusal(scanner) !== null) return this.#refuseContent(scanner, out);
    this.#askPolicy('data', { kind: 'none' }, out, this.#session!.helo?.name ?? null, (o, now) => this.#assemble(txn, scanner, o, now));
  }

  /** Security: a body with bare CR/LF or NUL (smuggling), an over-long line or too many octets is refused after the real end of data. */
  #refuseContent(scanner: ContentScanner, out: Output[]): void {
    const r = contentRefusal(scanner)!;
    out.push({ type: 'log', level: 'info', msg: 'message refused', fields: { defects: { ...scanner.defects }, octets: scanner.size } });
    this.#reset('endOfData', out);
    this.#error(r, out);
  }

  /** After the data-stage checks: assemble, ask the content checks, transform, commit. */
  #assemble(txn: Transaction, scanner: ContentScanner, out: Output[], nowMs: number): void {
    const session = this.#session!;
    const prepared = prepareMessage({
      queueId: queueIdFor(session.id, txn.seq),
      sessionId: session.id,
      nowMs,
      hostname: this.#cfg.hostname,
      client: { address: session.peer.address, port: session.peer.port, heloName: session.helo?.name ?? null, isEsmtp: session.helo?.verb === 'EHLO', isTls: session.tls !== null },
      reversePath: txn.reversePath === null ? '' : formatMailbox(txn.reversePath),
      bodyType: txn.body,
      smtputf8: txn.smtputf8,
      ...(txn.ret !== undefined ? { ret: txn.ret } : {}),
      ...(txn.envid !== undefined ? { envid: txn.envid } : {}),
      recipients: txn.recipients.map((r) => ({
        address: r.address,
        ...(r.notify !== undefined ? { notify: r.notify } : {}),
        ...(r.orcpt !== undefined ? { orcpt: r.orcpt } : {}),
      })),
      addedFields: txn.addedHeaders,
      // A body that went to its file holds the rest; one whose header section ended it (nothing
      // after it) is all in memory: there is no body file to copy.
      content:
        txn.spilled === null
          ? { kind: 'memory', chunks: scanner.chunks }
          : txn.spilled.bytes === 0
            ? { kind: 'memory', chunks: [txn.spilled.header] }
            : { kind: 'spilled', header: txn.spilled.header, bytes: txn.spilled.bytes },
    });
    // The content stage costs nothing (no parsing, no round trip) when no content check is configured.
    this.#askPolicy('content', { kind: 'message', message: prepared }, out, session.helo?.name ?? null, (o, _now, edits) => this.#finish(prepared, edits, o));
  }

  /** Applies the content checks' edits (one place: finishMessage), then transform or commit. */
  #finish(prepared: PreparedMessage, edits: MessageEdits | undefined, out: Output[]): void {
    const message = finishMessage(prepared, edits === undefined ? [] : [edits]);
    if (message === null) {
      // A content check discarded the message or removed every recipient: nothing is left to store or deliver.
      const why = edits?.discard === true ? 'a content check discarded it' : 'a content check removed every recipient';
      out.push({ type: 'log', level: 'info', msg: `message discarded: ${why}`, fields: { queueId: prepared.input.queueId } });
      this.#reset('endOfData', out);
      return this.#reply(REPLY.discarded, out);
    }
    if (this.#cfg.hasTransform === true) {
      this.#waiting = { kind: 'transform', message };
      out.push({ type: 'transform', message });
      return;
    }
    this.#commit(message, out);
  }

  #onTransformed(input: Extract<Input, { type: 'transformed' | 'transform-failed' }>, out: Output[]): void {
    if (this.#waiting.kind !== 'transform') throw new Error(`${input.type} while not waiting for a transform`);
    this.#waiting = NOT_WAITING;
    if (input.type === 'transform-failed') {
      this.#reset('endOfData', out);
      out.push({ type: 'log', level: 'warn', msg: 'transform failed', fields: { reason: input.reason } });
      return this.#reply(REPLY.localError, out);
    }
    this.#commit(input.message, out);
  }

  #commit(message: AcceptedMessage, out: Output[]): void {
    this.#waiting = { kind: 'commit', message };
    out.push({ type: 'commit', message });
  }

  #onCommitted(out: Output[]): void {
    const w = this.#waiting;
    if (w.kind !== 'commit') throw new Error('committed while not waiting for a commit');
    this.#waiting = NOT_WAITING;
    this.#reset('endOfData', out);
    this.#session!.counters.messages++;
    const m = w.message;
    out.push({
      type: 'log',
      level: 'info',
      msg: 'message accepted',
      fields: { queueId: m.queueId, from: m.reversePath, recipients: m.recipients.length, size: m.size, ...(m.quarantine !== undefined ? { quarantine: m.quarantine } : {}) },
    });
    this.#reply(REPLY.queued(m.queueId), out);
  }

  #onCommitFailed(reason: string, out: Output[]): void {
    if (this.#waiting.kind !== 'commit') throw new Error('commit-failed while not waiting for a commit');
    this.#waiting = NOT_WAITING;
    this.#reset('endOfData', out);
    out.push({ type: 'log', level: 'warn', msg: 'spool commit failed', fields: { reason } });
    this.#reply(REPLY.storageFailed, out);
  }

  #onStartTls(out: Output[]): void {
    const checked = checkStartTls(this.#cfg, this.#session!, this.#slot);
    if (!checked.ok) return this.#error(checked.reply, out);
    this.#reply(REPLY.startTls, out);
    // Security: RFC 3207 5 and the STARTTLS command-injection class: whatever the client sent
    // after the STARTTLS line, before the handshake, is thrown away, never executed.
    const dropped = this.#framer.discardBuffered();
    if (dropped > 0) out.push({ type: 'log', level: 'info', msg: 'discarded octets pipelined after STARTTLS', fields: { octets: dropped } });
    this.#waiting = WAITING_TLS;
    out.push({ type: 'start-tls' });
  }

  #onTlsReady(input: Extract<Input, { type: 'tls-ready' }>, out: Output[]): void {
    if (this.#waiting.kind !== 'tls') throw new Error('tls-ready while not waiting for TLS');
    this.#waiting = NOT_WAITING;
    this.#slot = applyTlsReady(this.#session!, this.#slot, input.tls);
    this.#framer.discardBuffered();
    out.push({ type: 'log', level: 'debug', msg: 'TLS established', fields: { protocol: input.tls.protocol, cipher: input.tls.cipher } });
  }

  /**
   * Runs `apply` now when no policy check is configured for the stage, otherwise asks the shell
   * and runs it when the verdict is "continue" or "accept".
   */
  #askPolicy(stage: PolicyStage, subject: PolicySubject, out: Output[], heloName: string | null, apply: (out: Output[], nowMs: number, edits: MessageEdits | undefined) => void): void {
    if (!this.#cfg.policyStages.has(stage)) {
      apply(out, this.#nowMs, undefined);
      return;
    }
    const prepared = subject.kind === 'message' ? subject.message : null;
    const txn = subject.kind === 'transaction' ? subject.txn : this.#openTransaction();
    out.push({
      type: 'policy',
      stage,
      session: this.#session!,
      transaction: txn,
      recipient: subject.kind === 'recipient' ? subject.recipient : null,
      heloName,
      message: prepared === null ? null : { fields: preparedFields(prepared), size: prepared.size, body: prepared.rest },
    });
    this.#waiting = { kind: 'policy', stage, txn, onContinue: apply };
  }

  #onVerdict(verdict: PolicyVerdict, nowMs: number, out: Output[]): void {
    const w = this.#waiting;
    if (w.kind !== 'policy') throw new Error('verdict while not waiting for one');
    this.#waiting = NOT_WAITING;
    if (verdict.action === 'continue' || verdict.action === 'accept') {
      if (w.stage === 'content') {
        // The message is assembled already: fields a content check asks for are edits like any other.
        const added = (verdict.headers ?? []).map((field) => ({ op: 'add' as const, field }));
        const edits = added.length === 0 ? verdict.edits : { ...verdict.edits, headers: [...added, ...(verdict.edits?.headers ?? [])] };
        return w.onContinue(out, nowMs, edits);
      }
      if (verdict.headers !== undefined && w.txn !== null) w.txn.addedHeaders.push(...verdict.headers);
      w.onContinue(out, nowMs, verdict.edits);
      return;
    }
    const session = this.#session!;
    // Security: the verdict log is append-only; no reset clears it (reset.ts).
    session.verdicts = [
      ...session.verdicts,
      {
        stage: w.stage,
        action: verdict.action,
        check: verdict.check,
        reason: verdict.reason,
        key: verdict.key ?? '',
        reply: verdict.reply,
        atMs: nowMs,
      },
    ];
    out.push({ type: 'log', level: 'info', msg: 'policy verdict', fields: { stage: w.stage, action: verdict.action, check: verdict.check, reason: verdict.reason, key: verdict.key } });
    if (w.stage === 'data' || w.stage === 'content') this.#reset('endOfData', out);
    if (w.stage === 'connect' && this.#isGreetingBegun) return this.#refuseAfterBegunGreeting(verdict.reply, nowMs, out);
    if (w.stage === 'connect') this.#enterRefusedMode(nowMs);
    if (verdict.action === 'disconnect') return this.#fatal(verdict.reply, out);
    // A refusal also counts toward the error limit (an unknown recipient is a client error).
    this.#error(verdict.reply, out);
    // Security: a client that keeps collecting refusals (retrying past a greylist or a block
    // list within one session) is not served further.
    if (this.phase !== 'closed' && session.verdicts.length >= this.#cfg.maxPolicyRefusals) this.#fatal(REPLY.tooManyRefusals, out);
    // After the 554 (held with it when the tarpit delays it): the shell's cap on 554-mode sessions.
    if (w.stage === 'connect' && this.phase !== 'closed') out.push({ type: 'refused-mode' });
  }

  /**
   * A connect-stage refusal when the shell's pregreet pause has sent `220-` already: the code of
   * a reply under way cannot change (RFC 5321 4.2.1), so a 554 in place of the greeting is no
   * longer possible. As postscreen does, the greeting is ended with its final 220 line and the
   * refusal's own reply answers every command but QUIT, within 554 mode's bounds and cap. A 421
   * is sent at once after the greeting and the session ends (RFC 5321 3.8: a server may send 421
   * unasked; the client reads it as the answer to its next command).
   */
  #refuseAfterBegunGreeting(refusal: Reply, nowMs: number, out: Output[]): void {
    this.#reply(REPLY.greeting(this.#cfg.hostname), out);
    if (refusal.code === 421) return this.#fatal(refusal, out);
    this.#enterRefusedMode(nowMs, refusal);
    out.push({ type: 'refused-mode' });
  }

  #reply(reply: Reply, out: Output[]): void {
    out.push({ type: 'reply', reply });
  }

  /** A client error: answered, counted, and past the limit the session ends (421 4.7.0). */
  #error(reply: Reply, out: Output[]): void {
    const session = this.#session!;
    session.counters.errors++;
    const tarpit = this.#cfg.tarpit;
    const delayMs = tarpit === undefined ? 0 : tarpitDelayMs(tarpit, session.counters.errors + this.#tarpitHeadStart);
    if (delayMs > 0 && this.#holdFrom === -1 && this.#waiting.kind === 'none') {
      // Security: past the free errors each error reply waits, doubling (a dictionary attack's
      // pace is ours); the framer keeps the rest of the input meanwhile, nothing else is held.
      out.push({ type: 'defense', rule: 'tarpit', limit: tarpit!.freeErrors, value: `${delayMs}ms`, reply });
      this.#holdFrom = out.length;
      this.#holdUntilMs = this.#nowMs + delayMs;
      this.#waiting = { kind: 'tarpit', untilMs: this.#holdUntilMs };
    }
    this.#reply(reply, out);
    if (session.counters.errors >= this.#cfg.maxErrors) {
      if (delayMs > 0) out.push({ type: 'defense', rule: 'tarpit_disconnect', limit: this.#cfg.maxErrors, value: session.counters.errors, reply: REPLY.tooManyErrors });
      this.#fatal(REPLY.tooManyErrors, out);
    }
  }

  #fatal(reply: Reply, out: Output[]): void {
    this.#reply(reply, out);
    this.#close(out);
  }

  #close(out: Output[], isQuit = false): void {
    this.#waiting = CLOSED;
    const txn = this.#openTransaction();
    this.#slot = null;
    if (txn !== null) this.#dropped(txn, out);
    out.push(isQuit ? { type: 'close', quit: true } : { type: 'close' });
  }
}
