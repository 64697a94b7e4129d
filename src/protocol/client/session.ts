// The sans-I/O SMTP/LMTP client session: server bytes and shell events in, commands and results
// out. No sockets, no timers, no clock: a wait is a `deadline` output with a duration, and the
// shell answers with a `timeout` input. Never retries and never picks another host: it reports
// per recipient and the courier (the shell) decides.
// RFC 5321 (3.1 greeting, 4.1.1 commands, 4.2.5 replies after DATA, 4.5.3.2 timeouts),
// RFC 2920 (PIPELINING: MAIL and every RCPT in one write), RFC 3030 (CHUNKING/BDAT),
// RFC 3207 (STARTTLS; EHLO again after it), RFC 2033 (LMTP: one reply per accepted recipient),
// RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8), RFC 3461 (DSN parameters).
//
// Inputs carry no `nowMs` (unlike the server machine's): this core never needs the time, only
// durations, which it hands out as deadlines.
//
// Rule 1: every command we send pushes one expectation onto a queue and every reply shifts one,
// so pipelined and lock-step sessions are the same code, and a reply can never be credited to
// the wrong command.

import type { Reply } from '../replies.ts';
import type { DsnNotify } from '../../message/accepted.ts';
import {
  DATA,
  formatGreetingCommand,
  formatMail,
  formatRcpt,
  NO_EXTENSIONS,
  parseExtensions,
  QUIT,
  RSET,
  STARTTLS,
  type BodyType,
  type Extensions,
  type MailParams,
} from './commands.ts';
import { ReplyParser } from './reply-parser.ts';

export type ClientProtocol = 'smtp' | 'lmtp';

const QUIT_TIMEOUT_MS = 5000;

/** RFC 5321 4.5.3.2 client timeouts. EHLO, HELO, STARTTLS, RSET and QUIT have none there;
 *  they use `commandMs` (Postfix's smtp_helo_timeout and friends default to 300 s too). */
export type ClientTimeouts = {
  greetingMs: number;
  commandMs: number;
  mailMs: number;
  rcptMs: number;
  dataInitMs: number;
  /** Each write of the content must drain within this (the shell re-arms it per write). */
  dataBlockMs: number;
  dataEndMs: number;
};

export const RFC_5321_TIMEOUTS: ClientTimeouts = {
  greetingMs: 300_000,
  commandMs: 300_000,
  mailMs: 300_000,
  rcptMs: 300_000,
  dataInitMs: 120_000,
  dataBlockMs: 180_000,
  dataEndMs: 600_000,
};

export type ClientConfig = {
  protocol: ClientProtocol;
  heloName: string;
  /** opportunistic: STARTTLS when offered; required: never send a transaction in the clear. */
  tls: 'opportunistic' | 'required' | 'none';
  /** The shell can do TLS on this connection (false on a plain retry after a failed handshake). */
  canStartTls: boolean;
  /** A message declared 8BITMIME to a peer without 8BITMIME: send it as it is, or fail it 5.6.3. */
  eightBitToSevenBitPeer: 'send' | 'fail';
  timeouts: ClientTimeouts;
};

export type ClientRecipient = {
  address: string;
  notify?: DsnNotify;
  orcpt?: { addrType: string; address: string };
};

/** A transaction as the core needs it: the envelope, the declared size and body type. */
export type ClientJob = {
  reversePath: string;
  recipients: readonly ClientRecipient[];
  bodyType: BodyType;
  smtputf8: boolean;
  ret?: 'FULL' | 'HDRS';
  envid?: string;
  size: number;
};

export type ClientStatus = 'delivered' | 'deferred' | 'failed' | 'relayed';
export type ClientResult = { status: ClientStatus; reply: Reply };

export type SessionStage = 'greeting' | 'helo' | 'tls';

export type ClientInput =
  | { type: 'bytes'; data: Buffer }
  | { type: 'tls-ready' }
  | { type: 'tls-failed'; reason: string }
  | { type: 'transaction'; job: ClientJob }
  /** All content is written: in DATA mode including the final ".CRLF"; in BDAT mode `bdatChunks`
   *  BDAT commands (the last one with LAST). */
  | { type: 'content-sent'; bdatChunks: number }
  /** A content write drained (re-arms the data block timeout). */
  | { type: 'content-progress' }
  | { type: 'timeout' }
  /** The peer closed the connection or the socket failed. */
  | { type: 'closed'; reason: string }
  /** Our side gives up (shutdown, a spool read error): unfinished recipients are deferred with
   *  `reply` (default: the shutdown reply). */
  | { type: 'abort'; reply?: Reply }
  | { type: 'quit' };

export type ClientOutput =
  | { type: 'send'; data: string }
  | { type: 'start-tls' }
  /** Wait at most this long for the next event; null: no deadline (idle, between jobs). */
  | { type: 'deadline'; timeoutMs: number | null }
  /** Greeted, EHLO done (and TLS when it was wanted): a transaction may start. */
  | { type: 'ready'; extensions: Extensions; isTls: boolean }
  /** Stream the content now, through a WireEncoder of this mode; `isBinary` (BINARYMIME): the
   *  octets go out as they are, in BDAT chunks, with no line-end canonicalisation. */
  | { type: 'send-content'; mode: 'data' | 'bdat'; isBinary: boolean }
  /** One result per job recipient, in job order. The session is ready again unless `close` follows. */
  | { type: 'results'; results: ClientResult[] }
  /** No transaction was possible on this connection: try another host. `stage` says where:
   *  the greeting (or the connection before it), EHLO/HELO/LHLO, or TLS. */
  | { type: 'session-failed'; reply: Reply; stage: SessionStage }
  /** The RSET before a reused session failed: nothing was sent for the job; use a new connection. */
  | { type: 'reuse-failed'; reason: string }
  | { type: 'close' };

type Phase =
  | 'greeting'
  | 'ehlo'
  | 'helo'
  | 'starttls'
  | 'tls-handshake'
  | 'ready'
  | 'rset'
  | 'envelope'
  | 'data-init'
  | 'content'
  | 'data-end'
  | 'quit'
  | 'closed';

type Expect = { kind: 'greeting' | 'ehlo' | 'helo' | 'starttls' | 'rset' | 'mail' | 'data' | 'bdat' | 'final' | 'quit' } | { kind: 'rcpt'; index: number };

type Transaction = {
  job: ClientJob;
  isPipelined: boolean;
  mailReply: Reply | null;
  /** Final results, set as they become known. */
  results: (ClientResult | null)[];
  /** Indices of recipients the peer accepted at RCPT, in order (LMTP answers in this order). */
  accepted: number[];
  /** Lock-step mode: the next recipient to send. */
  nextRcpt: number;
  mode: 'data' | 'bdat';
  bdatReplies: Reply[];
  bdatChunks: number | null;
  lmtpReplies: number;
  /** DATA went in the pipelined group (RFC 2920): its reply comes after the last RCPT's. */
  isDataPipelined: boolean;
  /** The envelope failed (the MAIL reply, or no recipient accepted) while a pipelined DATA's
   *  reply is still to come. */
  envelopeFailure: Reply | 'no-recipients' | null;
};

/** A reply we make up for a local condition (timeout, lost connection, refused before MAIL). */
export function localReply(code: number, enhanced: string, text: string): Reply {
  return { code, enhanced, lines: [text] };
}

export const LOCAL = {
  timeout: (phase: string) => localReply(421, '4.4.2', `Timed out waiting for the server (${phase})`),
  closed: (phase: string) => localReply(421, '4.4.2', `Connection lost (${phase})`),
  protocol: (reason: string) => localReply(421, '4.5.0', `Protocol error from the server: ${reason}`),
  aborted: localReply(421, '4.3.2', 'Delivery interrupted by shutdown'),
  tlsRequired: localReply(451, '4.7.10', 'TLS is required but the server does not offer STARTTLS'),
  tlsFailed: (reason: string) => localReply(451, '4.7.5', `TLS handshake failed: ${reason}`),
  tooBig: (max: number) => localReply(552, '5.3.4', `Message size exceeds the server's limit of ${max} octets`),
  noSmtputf8: localReply(553, '5.6.7', 'The server does not support SMTPUTF8, which this message requires'),
  no8bit: localReply(554, '5.6.3', 'The server does not support 8BITMIME, which this message requires'),
  noBinary: localReply(554, '5.6.3', 'The server does not support BINARYMIME and CHUNKING, which this message requires'),
  unexpected: (phase: string) => localReply(421, '4.5.0', `Unexpected reply from the server (${phase})`),
  // Made by the shells (the one client-side catalogue, as replies.ts is the server's):
  connectFailed: (why: string) => localReply(421, '4.4.1', `Connection failed: ${why}`),
  internalError: (why: string) => localReply(451, '4.3.0', `Internal error in the SMTP client: ${why}`),
  readError: (why: string) => localReply(451, '4.3.0', `Local error reading the message: ${why}`),
  noNextHop: localReply(451, '4.4.4', 'No next hop to deliver to'),
  lookupFailed: (why: string) => localReply(451, '4.4.3', `Next hop lookup failed: ${why}`),
  badRecipient: localReply(553, '5.1.3', 'Recipient address cannot be sent'),
  badSender: localReply(553, '5.1.7', 'Sender address cannot be sent'),
} as const;

function statusOf(r: Reply): ClientStatus {
  return r.code >= 500 ? 'failed' : r.code >= 400 ? 'deferred' : 'delivered';
}

function isOk(r: Reply): boolean {
  return r.code >= 200 && r.code < 300;
}

export class ClientSession {
  readonly #cfg: ClientConfig;
  #parser = new ReplyParser();
  #phase: Phase = 'greeting';
  #expect: Expect[] = [{ kind: 'greeting' }];
  #ext: Extensions = NO_EXTENSIONS;
  #isTls = false;
  #hasTransacted = false;
  #tx: Transaction | null = null;
  /** The job waiting for its RSET reply. */
  #pendingJob: ClientJob | null = null;
  #out: ClientOutput[] = [];

  constructor(cfg: ClientConfig) {
    this.#cfg = cfg;
  }

  /** The first output: the greeting deadline. */
  start(): ClientOutput[] {
    return [{ type: 'deadline', timeoutMs: this.#cfg.timeouts.greetingMs }];
  }

  get extensions(): Extensions {
    return this.#ext;
  }

  get isReady(): boolean {
    return this.#phase === 'ready';
  }

  get isClosed(): boolean {
    return this.#phase === 'closed';
  }

  step(input: ClientInput): ClientOutput[] {
    this.#out = [];
    if (this.#phase === 'closed') return this.#out;
    switch (input.type) {
      case 'bytes':
        for (const ev of this.#parser.push(input.data)) {
          if (this.isClosed) break;
          if (ev.type === 'protocol-error') this.#fail(LOCAL.protocol(ev.reason));
          else this.#onReply(ev.reply);
        }
        break;
      case 'tls-ready':
        if (this.#phase !== 'tls-handshake') throw new Error(`client session: tls-ready in ${this.#phase}`);
        this.#isTls = true;
        this.#ext = NO_EXTENSIONS;
        // RFC 3207 4.2: nothing from before the handshake carries over, not even parser state.
        this.#parser = new ReplyParser();
        this.#sendGreetingCommand(this.#cfg.protocol === 'lmtp' ? 'LHLO' : 'EHLO');
        break;
      case 'tls-failed':
        this.#sessionFailed(LOCAL.tlsFailed(input.reason), 'tls');
        break;
      case 'transaction':
        this.#startTransaction(input.job);
        break;
      case 'content-progress':
        if (this.#phase === 'content') this.#out.push({ type: 'deadline', timeoutMs: this.#cfg.timeouts.dataBlockMs });
        break;
      case 'content-sent':
        this.#onContentSent(input.bdatChunks);
        break;
      case 'timeout':
        this.#fail(LOCAL.timeout(this.#phase));
        break;
      case 'closed':
        if (this.#phase === 'quit' || this.#phase === 'ready') this.#close();
        else this.#fail(LOCAL.closed(input.reason));
        break;
      case 'abort':
        this.#fail(input.reply ?? LOCAL.aborted);
        break;
      case 'quit':
        if (this.#phase === 'ready') {
          this.#phase = 'quit';
          this.#expect = [{ kind: 'quit' }];
          this.#send(QUIT);
          // Nothing depends on QUIT's answer: a short bound, so close() never waits minutes.
          this.#out.push({ type: 'deadline', timeoutMs: Math.min(this.#cfg.timeouts.commandMs, QUIT_TIMEOUT_MS) });
        } else this.#fail(LOCAL.aborted);
        break;
      default:
        return assertNever(input);
    }
    return this.#out;
  }

  #send(data: string): void {
    this.#out.push({ type: 'send', data });
  }

  #close(): void {
    this.#phase = 'closed';
    this.#expect = [];
    this.#out.push({ type: 'deadline', timeoutMs: null }, { type: 'close' });
  }

  /** Something went wrong: results for a transaction in progress, else session-failed; close. */
  #fail(reply: Reply): void {
    if (this.#phase === 'rset') {
      // Nothing of the job counts: the courier sends it again on a fresh connection.
      this.#out.push({ type: 'reuse-failed', reason: reply.lines[0] ?? '' });
      this.#pendingJob = null;
      this.#tx = null;
    } else if (this.#tx !== null) {
      this.#finish(reply);
    } else if (this.#phase !== 'ready' && this.#phase !== 'quit') {
      const stage: SessionStage = this.#phase === 'greeting' ? 'greeting' : this.#phase === 'starttls' || this.#phase === 'tls-handshake' ? 'tls' : 'helo';
      this.#out.push({ type: 'session-failed', reply, stage });
    }
    this.#close();
  }

  #sessionFailed(reply: Reply, stage: SessionStage): void {
    this.#out.push({ type: 'session-failed', reply, stage });
    // RFC 5321 4.1.1.10: a polite QUIT; we do not wait for its answer.
    if (this.#phase !== 'tls-handshake') this.#send(QUIT);
    this.#close();
  }

  #sendGreetingCommand(verb: 'EHLO' | 'HELO' | 'LHLO'): void {
    this.#phase = verb === 'HELO' ? 'helo' : 'ehlo';
    this.#expect = [{ kind: verb === 'HELO' ? 'helo' : 'ehlo' }];
    this.#send(formatGreetingCommand(verb, this.#cfg.heloName));
    this.#out.push({ type: 'deadline', timeoutMs: this.#cfg.timeouts.commandMs });
  }

  #onReply(r: Reply): void {
    // BDAT replies may come while we still stream chunks (RFC 3030 4.2 with PIPELINING).
    if (this.#phase === 'content' && this.#tx?.mode === 'bdat') {
      this.#onBdat(r);
      return;
    }
    const e = this.#expect.shift();
    if (e === undefined) {
      // A reply nobody asked for (e.g. 421 while idle): the session is over.
      this.#fail(LOCAL.unexpected(this.#phase));
      return;
    }
    switch (e.kind) {
      case 'greeting':
        if (r.code === 220) this.#sendGreetingCommand(this.#cfg.protocol === 'lmtp' ? 'LHLO' : 'EHLO');
        else this.#sessionFailed(r, 'greeting');
        return;
      case 'ehlo':
        if (isOk(r)) this.#onEhlo(parseExtensions(r));
        // RFC 5321 4.1.4 / 3.2: a server that does not know EHLO answers 5xx; fall back to HELO.
        else if (r.code >= 500 && this.#cfg.protocol === 'smtp' && !this.#isTls) this.#sendGreetingCommand('HELO');
        else this.#sessionFailed(r, 'helo');
        return;
      case 'helo':
        if (isOk(r)) this.#onEhlo(NO_EXTENSIONS);
        else this.#sessionFailed(r, 'helo');
        return;
      case 'starttls':
        if (r.code === 220) {
          // Security: bytes after the 220 were sent in the clear before the handshake (the
          // STARTTLS injection class, CVE-2011-0411): the session is not trusted.
          if (this.#parser.isMidReply) {
            this.#fail(LOCAL.protocol('bytes after the STARTTLS reply'));
            return;
          }
          this.#phase = 'tls-handshake';
          this.#out.push({ type: 'start-tls' }, { type: 'deadline', timeoutMs: this.#cfg.timeouts.commandMs });
        } else if (this.#cfg.tls === 'required') this.#sessionFailed(r, 'tls');
        else this.#ready(); // opportunistic: RFC 3207 4, the server may refuse; go on in the clear
        return;
      case 'rset':
        if (!isOk(r)) this.#fail(r);
        else if (this.#pendingJob !== null) {
          const job = this.#pendingJob;
          this.#pendingJob = null;
          this.#sendEnvelope(job);
        } else this.#phase = 'envelope'; // the pipelined group goes on
        return;
      case 'mail':
        this.#onMail(r);
        return;
      case 'rcpt':
        this.#onRcpt(e.index, r);
        return;
      case 'data':
        this.#onData(r);
        return;
      case 'bdat':
        this.#onBdat(r);
        return;
      case 'final':
        this.#onFinal(r);
        return;
      case 'quit':
        this.#close();
        return;
      default:
        return assertNever(e);
    }
  }

  #onEhlo(ext: Extensions): void {
    this.#ext = ext;
    const wantsTls = this.#cfg.tls !== 'none' && !this.#isTls;
    if (wantsTls && this.#cfg.canStartTls && ext.keywords.has('STARTTLS')) {
      this.#phase = 'starttls';
      this.#expect = [{ kind: 'starttls' }];
      this.#send(STARTTLS);
      this.#out.push({ type: 'deadline', timeoutMs: this.#cfg.timeouts.commandMs });
      return;
    }
    // Security: with tls = "required" nothing of the envelope is ever sent in the clear.
    if (this.#cfg.tls === 'required' && !this.#isTls) {
      this.#sessionFailed(LOCAL.tlsRequired, 'tls');
      return;
    }
    this.#ready();
  }

  #ready(): void {
    this.#phase = 'ready';
    this.#expect = [];
    this.#out.push({ type: 'deadline', timeoutMs: null }, { type: 'ready', extensions: this.#ext, isTls: this.#isTls });
  }

  /** Refusals we can make before MAIL, from what the peer announced. */
  #preflight(job: ClientJob): Reply | null {
    const kw = this.#ext.keywords;
    // RFC 1870 6: do not send a message the server has said it will refuse by size.
    if (this.#ext.maxSize !== null && this.#ext.maxSize > 0 && job.size > this.#ext.maxSize) return LOCAL.tooBig(this.#ext.maxSize);
    // RFC 6531 3.7.5: a UTF-8 envelope cannot go to a server without SMTPUTF8.
    if (job.smtputf8 && !kw.has('SMTPUTF8')) return LOCAL.noSmtputf8;
    // RFC 3030 3: binary content needs BINARYMIME and CHUNKING; it cannot be line-encoded.
    if (job.bodyType === 'BINARYMIME' && !(kw.has('BINARYMIME') && kw.has('CHUNKING'))) return LOCAL.noBinary;
    if (job.bodyType === '8BITMIME' && !kw.has('8BITMIME') && this.#cfg.eightBitToSevenBitPeer === 'fail') return LOCAL.no8bit;
    return null;
  }

  #startTransaction(job: ClientJob): void {
    if (this.#phase !== 'ready') throw new Error(`client session: transaction in ${this.#phase}`);
    if (job.recipients.length === 0) throw new Error('client session: a transaction without recipients');
    const refusal = this.#preflight(job);
    if (refusal !== null) {
      this.#out.push({ type: 'results', results: job.recipients.map(() => ({ status: statusOf(refusal), reply: refusal })) });
      return;
    }
    if (this.#hasTransacted && this.#ext.keywords.has('PIPELINING')) {
      // RFC 2920 3.1: RSET may lead the group; if it fails, the rest is thrown away with the
      // connection (reuse-failed), so the job is never half-sent on a stale session.
      this.#sendEnvelope(job, true);
      return;
    }
    if (this.#hasTransacted) {
      // Postfix's connection-cache habit: RSET first, so a session left in an unknown state (or
      // silently closed while idle) is found out before any of this job is sent.
      this.#phase = 'rset';
      this.#pendingJob = job;
      this.#expect = [{ kind: 'rset' }];
      this.#send(RSET);
      this.#out.push({ type: 'deadline', timeoutMs: this.#cfg.timeouts.commandMs });
      return;
    }
    this.#sendEnvelope(job);
  }

  #sendEnvelope(job: ClientJob, withRset = false): void {
    const kw = this.#ext.keywords;
    this.#hasTransacted = true;
    const hasDsn = kw.has('DSN');
    const params: MailParams = {};
    if (this.#ext.maxSize !== null) params.size = job.size;
    if (job.bodyType === '8BITMIME' && kw.has('8BITMIME')) params.body = '8BITMIME';
    if (job.bodyType === 'BINARYMIME') params.body = 'BINARYMIME';
    if (job.smtputf8) params.smtputf8 = true;
    if (hasDsn && job.ret !== undefined) params.ret = job.ret;
    if (hasDsn && job.envid !== undefined) params.envid = job.envid;
    const isPipelined = kw.has('PIPELINING');
    const useBdat = this.#cfg.protocol === 'smtp' && kw.has('CHUNKING');
    this.#tx = {
      job,
      isPipelined,
      mailReply: null,
      results: job.recipients.map(() => null),
      accepted: [],
      nextRcpt: 0,
      mode: useBdat || job.bodyType === 'BINARYMIME' ? 'bdat' : 'data',
      bdatReplies: [],
      bdatChunks: null,
      lmtpReplies: 0,
      isDataPipelined: false,
      envelopeFailure: null,
    };
    this.#phase = withRset ? 'rset' : 'envelope';
    const mail = formatMail(job.reversePath, params);
    if (isPipelined) {
      // RFC 2920 3.1: MAIL, every RCPT and DATA (the last command of the group) in one write;
      // the replies come back in order.
      let batch = withRset ? RSET + mail : mail;
      this.#expect = withRset ? [{ kind: 'rset' }, { kind: 'mail' }] : [{ kind: 'mail' }];
      job.recipients.forEach((_, i) => {
        batch += this.#rcptLine(i);
        this.#expect.push({ kind: 'rcpt', index: i });
      });
      if (this.#tx.mode === 'data') {
        batch += DATA;
        this.#expect.push({ kind: 'data' });
        this.#tx.isDataPipelined = true;
      }
      this.#tx.nextRcpt = job.recipients.length;
      this.#send(batch);
    } else {
      this.#expect = [{ kind: 'mail' }];
      this.#send(mail);
    }
    this.#out.push({ type: 'deadline', timeoutMs: this.#cfg.timeouts.mailMs });
  }

  #rcptLine(i: number): string {
    const r = this.#tx!.job.recipients[i];
    // RFC 3461 4: DSN parameters go on only to a server that offers DSN.
    if (!this.#ext.keywords.has('DSN')) return formatRcpt(r.address);
    return formatRcpt(r.address, { ...(r.notify !== undefined ? { notify: r.notify } : {}), ...(r.orcpt !== undefined ? { orcpt: r.orcpt } : {}) });
  }

  #onMail(r: Reply): void {
    const tx = this.#tx!;
    tx.mailReply = r;
    if (!tx.isPipelined) {
      if (!isOk(r)) return this.#finish(r);
      this.#sendNextRcpt();
      return;
    }
    this.#out.push({ type: 'deadline', timeoutMs: this.#cfg.timeouts.rcptMs });
    if (this.#isEnvelopeAnswered()) this.#envelopeDone();
  }

  /** Every MAIL and RCPT reply is in (what may remain is the pipelined DATA's). */
  #isEnvelopeAnswered(): boolean {
    return this.#expect.length === 0 || this.#expect[0].kind === 'data';
  }

  #sendNextRcpt(): void {
    const tx = this.#tx!;
    const i = tx.nextRcpt++;
    this.#expect = [{ kind: 'rcpt', index: i }];
    this.#send(this.#rcptLine(i));
    this.#out.push({ type: 'deadline', timeoutMs: this.#cfg.timeouts.rcptMs });
  }

  #onRcpt(index: number, r: Reply): void {
    const tx = this.#tx!;
    // After a refused MAIL the RCPT replies (503s) say nothing about the recipients.
    if (tx.mailReply !== null && !isOk(tx.mailReply)) {
      if (this.#isEnvelopeAnswered()) this.#envelopeDone();
      return;
    }
    if (isOk(r)) tx.accepted.push(index);
    else tx.results[index] = { status: statusOf(r), reply: r };
    if (!tx.isPipelined && tx.nextRcpt < tx.job.recipients.length) {
      this.#sendNextRcpt();
      return;
    }
    if (this.#isEnvelopeAnswered()) this.#envelopeDone();
  }

  #envelopeDone(): void {
    const tx = this.#tx!;
    const mail = tx.mailReply!;
    if (tx.isDataPipelined) {
      // The DATA reply is still to come; a refused envelope waits for it before finishing.
      if (!isOk(mail)) tx.envelopeFailure = mail;
      else if (tx.accepted.length === 0) tx.envelopeFailure = 'no-recipients';
      this.#phase = 'data-init';
      this.#out.push({ type: 'deadline', timeoutMs: this.#cfg.timeouts.dataInitMs });
      return;
    }
    // With pipelining a refused MAIL still gets RCPT replies (503s); the MAIL reply decides.
    if (!isOk(mail)) return this.#finish(mail);
    if (tx.accepted.length === 0) return this.#finish(null);
    if (tx.mode === 'bdat') {
      this.#phase = 'content';
      this.#out.push({ type: 'send-content', mode: 'bdat', isBinary: tx.job.bodyType === 'BINARYMIME' }, { type: 'deadline', timeoutMs: this.#cfg.timeouts.dataBlockMs });
      return;
    }
    this.#phase = 'data-init';
    this.#expect = [{ kind: 'data' }];
    this.#send(DATA);
    this.#out.push({ type: 'deadline', timeoutMs: this.#cfg.timeouts.dataInitMs });
  }

  #onData(r: Reply): void {
    const tx = this.#tx!;
    if (tx.envelopeFailure !== null) {
      this.#finish(tx.envelopeFailure === 'no-recipients' ? null : tx.envelopeFailure);
      // RFC 2920 3.1 says DATA must fail without a valid recipient; a server that says 354
      // anyway gets no content from us, only a closed connection.
      if (r.code === 354) this.#close();
      return;
    }
    if (r.code !== 354) {
      if (isOk(r)) this.#fail(LOCAL.unexpected('DATA'));
      else this.#finish(r);
      return;
    }
    this.#phase = 'content';
    // Replies during the content are not expected in DATA mode; one that comes is the server
    // giving up (a 5xx and a close): it is taken as the final reply.
    this.#expect = [{ kind: 'final' }];
    this.#out.push({ type: 'send-content', mode: 'data', isBinary: false }, { type: 'deadline', timeoutMs: this.#cfg.timeouts.dataBlockMs });
  }

  #onContentSent(bdatChunks: number): void {
    const tx = this.#tx;
    if (tx === null || this.#phase !== 'content') return; // already finished by an early reply
    this.#phase = 'data-end';
    this.#out.push({ type: 'deadline', timeoutMs: this.#cfg.timeouts.dataEndMs });
    if (tx.mode === 'bdat') {
      tx.bdatChunks = bdatChunks;
      const n = bdatChunks - tx.bdatReplies.length;
      for (let i = 0; i < n; i++) this.#expect.push({ kind: 'bdat' });
      if (n <= 0) this.#bdatDone();
      return;
    }
    // The 'final' expectations: SMTP one reply; LMTP one per accepted recipient (RFC 2033 4.2).
    const n = this.#cfg.protocol === 'lmtp' ? tx.accepted.length : 1;
    this.#expect = [];
    for (let i = tx.lmtpReplies; i < n; i++) this.#expect.push({ kind: 'final' });
  }

  #onBdat(r: Reply): void {
    const tx = this.#tx!;
    tx.bdatReplies.push(r);
    if (tx.bdatChunks !== null && tx.bdatReplies.length >= tx.bdatChunks) this.#bdatDone();
  }

  #bdatDone(): void {
    const tx = this.#tx!;
    // RFC 3030 2: any refused chunk fails the transaction; otherwise the LAST chunk's reply decides.
    const bad = tx.bdatReplies.find((r) => !isOk(r));
    this.#finish(bad ?? tx.bdatReplies[tx.bdatReplies.length - 1] ?? LOCAL.unexpected('BDAT'));
  }

  #onFinal(r: Reply): void {
    const tx = this.#tx!;
    if (this.#phase === 'content') {
      // A reply before our final dot: the server aborted the data. Never a success.
      this.#finish(isOk(r) ? LOCAL.unexpected('DATA content') : r);
      this.#close();
      return;
    }
    if (this.#cfg.protocol === 'lmtp') {
      // RFC 2033 4.2: one reply per recipient accepted at RCPT, in RCPT order, each on its own.
      const index = tx.accepted[tx.lmtpReplies++];
      tx.results[index] = this.#deliveredOr(tx.job, index, r);
      if (tx.lmtpReplies === tx.accepted.length) this.#finish(null);
      return;
    }
    this.#finish(r);
  }

  /** A 2xx after the data is delivered, or relayed when SUCCESS was asked of a peer without DSN. */
  #deliveredOr(job: ClientJob, index: number, r: Reply): ClientResult {
    const status = statusOf(r);
    if (status !== 'delivered') return { status, reply: r };
    const notify = job.recipients[index].notify;
    const wantsSuccess = notify !== undefined && notify !== 'NEVER' && notify.includes('SUCCESS');
    // RFC 3461 5.2.2.3 / 6.2.3: the next hop cannot report success; we report "relayed". An LMTP
    // server is the final delivery agent, so its 2xx is a delivery.
    if (wantsSuccess && this.#cfg.protocol === 'smtp' && !this.#ext.keywords.has('DSN')) return { status: 'relayed', reply: r };
    return { status, reply: r };
  }

  /** Ends the transaction: every recipient without a result gets one from `r` (null: only
   *  recipients refused at RCPT exist, so there is none left). */
  #finish(r: Reply | null): void {
    const tx = this.#tx!;
    this.#tx = null;
    const results = tx.results.map((res, i) => {
      if (res !== null) return res;
      const reply = r ?? LOCAL.unexpected('transaction');
      // A reply we made up for trouble (timeout, closed) defers; a peer's 2xx counts only after data.
      if (this.#phase === 'envelope' || this.#phase === 'data-init' || this.#phase === 'rset') {
        return { status: isOk(reply) ? 'deferred' : statusOf(reply), reply } as ClientResult;
      }
      if (this.#phase === 'content' && isOk(reply)) return { status: 'deferred', reply } as ClientResult;
      return this.#deliveredOr(tx.job, i, reply);
    });
    this.#out.push({ type: 'results', results });
    if (this.#phase !== 'closed') {
      this.#phase = 'ready';
      this.#expect = [];
      this.#out.push({ type: 'deadline', timeoutMs: null });
    }
  }
}

function assertNever(x: never): never {
  throw new Error(`client session: unhandled ${JSON.stringify(x)}`);
}
