// One client connection: moves bytes between a socket and the session machine, runs the actions
// the machine asks for (spool commit, TLS, policy) and feeds their results back. Behind a load
// balancer (smtp.proxy_protocol) it first reads the PROXY header (net/proxy.ts parses it) and
// starts the machine with the client the header names.
// Never parses SMTP itself; never lets one connection's failure touch another: our own bug
// answers 421 4.3.0 and closes this connection only.

import tls from 'node:tls';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { AcceptedMessage } from '../message/accepted.ts';
import type { SpilledBodyReader } from '../message/content.ts';
import type { BodyFile } from '../spool/body-file.ts';
import type { SessionMetrics } from '../obs/metrics.ts';
import { assertNever } from '../protocol/command.ts';
import { SmtpMachine, type Input, type Output, type PolicyVerdict } from '../protocol/machine.ts';
import type { MachineConfig } from '../protocol/machine-config.ts';
import { formatReply, REPLY, type Reply } from '../protocol/replies.ts';
import type { SpoolWriter } from '../spool/types.ts';
import { normalizeAddress } from './networks.ts';
import { ProxyHeaderReader } from '../net/proxy.ts';
import type { Peer } from '../protocol/session.ts';
import type { AdmissionDecision } from './admission.ts';
import type { PregreetMemory } from '../defense/pregreet.ts';
import { defenseFired, type DefenseMetrics } from '../defense/events.ts';
import type { TarpitMemory } from '../defense/tarpit-memory.ts';
import { processWheel, WheelEntry, type TimerWheel } from './timer-wheel.ts';

/** A plain verdict when every check answered synchronously: the connection then steps it in at once. */
export type PolicyRunner = (request: Extract<Output, { type: 'policy' }>, readSpilled: SpilledBodyReader | null) => PolicyVerdict | Promise<PolicyVerdict>;

/** Turns an accepted message into the one to store (e.g. adds a DKIM-Signature); a rejection is a 451. */
export type MessageTransform = (message: AcceptedMessage) => Promise<AcceptedMessage>;

export type ConnectionDeps = {
  machineConfig: MachineConfig;
  spool: SpoolWriter;
  log: Logger;
  secureContext: tls.SecureContext | null;
  isRelayClient: (address: string) => boolean;
  newSessionId: () => string;
  policy: PolicyRunner | null;
  /** The step between content checks and commit (DKIM signing, later); machineConfig.hasTransform says it is there. */
  transform?: MessageTransform | null;
  commandTimeoutMs: number;
  dataTimeoutMs: number;
  /** Upper bound on one spool commit or policy verdict. */
  actionTimeoutMs: number;
  /** Accepted messages and negative replies are counted here (sessions: by the server). */
  metrics?: SessionMetrics | null;
  /** How long a STARTTLS handshake may take (tls.handshake_timeout_seconds); default: the command timeout. */
  tlsHandshakeTimeoutMs?: number;
  /** smtp.proxy_protocol: every connection starts with a PROXY header from a trusted proxy. */
  proxy?: { isTrusted: (address: string) => boolean; headerTimeoutMs: number } | null;
  /** The pregreet test (docs/defense.md): pause with `220-`, refuse a client that talks first. */
  pregreet?: { memory: PregreetMemory; waitMs: number; action: 'reject' | 'disconnect'; hostname: string } | null;
  /** 554 mode's cap (limits.max_refused_sessions), for blocked clients and connect-stage
   *  refusals alike: a hold to release when the session ends, or null when the cap is reached
   *  (the refused client is then closed right after its 554). Absent: connect-stage refusals are
   *  not capped, and a blocked client is closed after its 554. */
  holdRefused?: (() => (() => void) | null) | null;
  /** Admission (server/admission.ts): judges the real client before any session state exists. */
  admit?: ((address: string, nowMs: number) => AdmissionDecision | Promise<AdmissionDecision>) | null;
  /** Called with the size of every chunk read from the client (read-reclaim.ts). */
  onRead?: (bytes: number) => void;
  /** Called once when the connection is gone. */
  onClose: (c: Connection) => void;
  /** Where defenses the machine fires are counted (portcullis_defense_events_total). */
  defenseMetrics?: DefenseMetrics | null;
  /** The tarpit's memory across sessions (tarpit.remember_seconds); null: not remembered. */
  tarpitMemory?: TarpitMemory | null;
  /** The wheel every wait of this connection goes on (default: the process's). */
  wheel?: TimerWheel;
};

/** Body octets queued for the body file past which reading stops until they are written: with a
 *  disk slower than the clients, every large upload holds about this much (plus one read). Two
 *  of the machine's 64 KiB append steps: one being written while the next one arrives. It was
 *  256 KiB; with 100 uploads per worker that is 25 MiB held for no gain in speed (bench:memory). */
const BODY_BACKLOG_BYTES = 64 * 1024;

const CONTINUE: PolicyVerdict = { action: 'continue' };
/** Our bug in the policy runner (not a check's: the pipeline catches those) ends the session. */
const RUNNER_THREW: PolicyVerdict = { action: 'disconnect', reply: REPLY.internalError, check: 'pipeline', reason: 'runner threw' };

/** How long a closing connection may take to flush its last reply before it is destroyed. */
const CLOSE_GRACE_MS = 2000;

/** The connection a socket belongs to, for the shared listeners. */
const OWNER = Symbol('connection');
type OwnedSocket = Socket & { [OWNER]?: Connection | undefined };

export class Connection {
  readonly #deps: ConnectionDeps;
  readonly #machine: SmtpMachine;
  /** The session's child logger (`sid` bound), made on the first line it logs: an idle
   *  connection logs only its `connect` line, which goes through the parent with `sid` as its
   *  first field (the same JSON), so it never pays for a child and its bindings. */
  #logger: Logger | null = null;
  readonly sessionId: string;
  #socket: Socket;
  #isClosed = false;
  #isShuttingDown = false;
  #pendingActions = 0;
  /** The PROXY header is not in yet: there is no session to stop gracefully. */
  #isAwaitingProxyHeader = false;
  /** The body file of the transaction whose content went past the in-memory threshold. */
  #body: { seq: number; file: BodyFile } | null = null;
  /** Reading is stopped until the body file has caught up. */
  #isWaitingForBody = false;
  readonly #startedMs = Date.now();
  /** Gives the admission counts back when the connection ends. */
  #release: (() => void) | null = null;
  /** The one timer-wheel entry of this connection: the machine's next deadline (a tick), or the
   *  PROXY header bound, the TLS handshake bound, or the close grace, whichever waits now. */
  readonly #timer: WheelEntry;
  readonly #wheel: TimerWheel;
  /** The machine judges its own deadlines (machineConfig.limits): no socket timeout is set. */
  readonly #isMachineTimed: boolean;
  /** What the timer entry fires now, when not the machine's tick. */
  #onTimer: ((nowMs: number) => void) | null = null;
  #peerAddress = '';
  // The socket's listeners are shared by every connection (found through the socket's OWNER
  // slot), not arrow functions per connection: five closures and their context were about
  // 360 B of each idle connection (bench:defense's heap snapshot).
  static readonly #socketData = function (this: Socket, chunk: Buffer): void {
    const c = (this as OwnedSocket)[OWNER];
    if (c !== undefined) c.#onData(chunk);
  };
  static readonly #socketEnd = function (this: Socket): void {
    const c = (this as OwnedSocket)[OWNER];
    if (c !== undefined) c.#feed({ type: 'end-of-input', nowMs: Date.now() });
  };
  static readonly #socketTimeout = function (this: Socket): void {
    const c = (this as OwnedSocket)[OWNER];
    if (c !== undefined) c.#feed({ type: 'timeout', nowMs: Date.now() });
  };
  static readonly #socketError = function (this: Socket, err: Error): void {
    const c = (this as OwnedSocket)[OWNER];
    if (c === undefined) return;
    c.#log.debug({ err: err.message }, 'socket error');
    c.#destroy();
  };
  static readonly #socketClose = function (this: Socket): void {
    const c = (this as OwnedSocket)[OWNER];
    if (c !== undefined) c.#destroy();
  };
  static readonly #timerFired = (nowMs: number, owner: unknown): void => {
    const c = owner as Connection;
    const f = c.#onTimer;
    if (f !== null) f(nowMs);
    else c.#feed({ type: 'tick', nowMs });
  };

  #onData(chunk: Buffer): void {
    this.#deps.onRead?.(chunk.length);
    this.#feed({ type: 'bytes', nowMs: Date.now(), data: chunk });
    // Security: input that arrives while the machine waits is only buffered; stop reading until
    // the wait ends, so a client pipelining without end holds at most one chunk here.
    if (this.#machine.phase === 'waiting' && !this.#isClosed && !this.#socket.isPaused()) this.#socket.pause();
  }

  constructor(socket: Socket, deps: ConnectionDeps) {
    this.#deps = deps;
    this.#socket = socket;
    this.sessionId = deps.newSessionId();
    this.#machine = new SmtpMachine(deps.machineConfig);
    this.#wheel = deps.wheel ?? processWheel();
    this.#timer = new WheelEntry(Connection.#timerFired, this);
    this.#isMachineTimed = deps.machineConfig.limits !== undefined;
  }

  get #log(): Logger {
    return (this.#logger ??= this.#deps.log.child({ sid: this.sessionId }));
  }

  /** Runs `f` at `dueMs` on the wheel in place of the machine's tick (a bound of the shell's own). */
  #waitShell(dueMs: number, f: (nowMs: number) => void): void {
    this.#onTimer = f;
    this.#wheel.schedule(this.#timer, dueMs);
  }

  /** Back to the machine's deadlines. */
  #waitMachine(): void {
    this.#onTimer = null;
    if (this.#isMachineTimed && !this.#isClosed) this.#wheel.schedule(this.#timer, this.#machine.nextDeadlineMs);
  }

  start(): void {
    const s = this.#socket;
    s.setNoDelay(true);
    const socketPeer = { address: normalizeAddress(s.remoteAddress ?? '0.0.0.0'), port: s.remotePort ?? 0 };
    const proxy = this.#deps.proxy ?? null;
    if (proxy === null) {
      this.#begin(socketPeer, null, null);
      return;
    }
    // Security: only a trusted proxy may name the client; anyone else is closed before a byte is read.
    if (!proxy.isTrusted(socketPeer.address)) {
      // A warn line of its own (a misconfigured balancer or a probe), counted like every defense.
      this.#deps.defenseMetrics?.defenseFired('proxy_untrusted');
      this.#log.warn({ client: socketPeer.address, port: socketPeer.port, rule: 'proxy_untrusted', limit: 'proxy.trusted' }, 'connection from an untrusted address on a PROXY protocol listener: closed');
      this.#destroy();
      return;
    }
    this.#readProxyHeader(socketPeer, proxy.headerTimeoutMs);
  }

  /**
   * PROXY protocol (net/proxy.ts): nothing is sent, and nothing reaches the machine, until the
   * whole header is in, within the deadline. The bytes after it are the client's first input.
   */
  #readProxyHeader(socketPeer: Peer, timeoutMs: number): void {
    const s = this.#socket;
    const reader = new ProxyHeaderReader();
    this.#isAwaitingProxyHeader = true;
    const stop = (): void => {
      this.#isAwaitingProxyHeader = false;
      this.#onTimer = null;
      this.#wheel.cancel(this.#timer);
      s.off('data', onData);
      s.off('end', onGone);
      s.off('error', onGone);
      s.off('close', onGone);
    };
    const refuse = (reason: string, rule: 'proxy_invalid' | 'proxy_timeout' = 'proxy_invalid'): void => {
      stop();
      this.#deps.defenseMetrics?.defenseFired(rule);
      const limit = rule === 'proxy_timeout' ? `${timeoutMs / 1000}s` : undefined;
      this.#log.warn({ proxy: socketPeer.address, port: socketPeer.port, rule, limit, reason }, 'PROXY protocol header refused: closed');
      this.#destroy();
    };
    const onData = (chunk: Buffer): void => {
      this.#deps.onRead?.(chunk.length);
      const r = reader.push(chunk);
      if (r.type === 'needs-more') return;
      if (r.type === 'invalid') {
        refuse(r.reason);
        return;
      }
      stop();
      const { source } = r.header;
      // LOCAL (a health check), UNKNOWN and AF_UNSPEC name no client: the proxy is the peer.
      const client = source === null ? socketPeer : { address: normalizeAddress(source.address), port: source.port };
      this.#begin(client, socketPeer, r.rest.length === 0 ? null : Buffer.from(r.rest));
    };
    const onGone = (): void => {
      stop();
      this.#destroy();
    };
    // Security: a proxy that sent part of a header and stops reading must not hold the socket either.
    this.#waitShell(Date.now() + timeoutMs, () => refuse(`no complete header within ${timeoutMs} ms`, 'proxy_timeout'));
    s.on('data', onData);
    s.once('end', onGone);
    s.once('error', onGone);
    s.once('close', onGone);
  }

  /**
   * Admission, then the session: `peer` is the client every check sees (from PROXY when trusted),
   * `proxy` the load balancer, if any. A refused client gets its one reply and is closed; no
   * session is started for it.
   */
  #begin(peer: Peer, proxy: Peer | null, firstBytes: Buffer | null): void {
    const s = this.#socket;
    this.#attach(s);
    const decision = this.#deps.admit?.(peer.address, Date.now()) ?? null;
    if (decision === null) {
      this.#startSession(peer, proxy, firstBytes, null);
      return;
    }
    if (!(decision instanceof Promise)) {
      this.#admitted(decision, peer, proxy, firstBytes);
      return;
    }
    // Past this worker's share the primary counts (admission.ts); what the client sends meanwhile
    // waits in the socket, unread.
    s.pause();
    void decision.then((d) => {
      if (this.#isClosed) {
        if (d.kind === 'allow') d.release();
        return;
      }
      s.resume();
      this.#admitted(d, peer, proxy, firstBytes);
    });
  }

  #admitted(decision: AdmissionDecision, peer: Peer, proxy: Peer | null, firstBytes: Buffer | null): void {
    if (decision.kind === 'refuse') {
      // A blocked client gets 554 mode (a bounded wait for QUIT) while there is room for it.
      const hold = decision.rule === 'access_block' ? (this.#deps.holdRefused?.() ?? null) : null;
      if (hold !== null) {
        this.#release = hold;
        this.#startSession(peer, proxy, firstBytes, decision.reply);
        return;
      }
      if (decision.rule === 'access_block') this.#refusedOverCap(peer.address, decision.reply);
      this.#deps.metrics?.reply(decision.reply.code);
      this.#write(formatReply(decision.reply));
      // Security: never a zombie: past the cap a refused client does not wait for QUIT at all.
      this.#close();
      return;
    }
    this.#release = decision.release;
    const pregreet = this.#deps.pregreet ?? null;
    if (pregreet !== null && decision.isAllowListed !== true) {
      this.#pregreet(pregreet, peer, proxy, firstBytes);
      return;
    }
    this.#startSession(peer, proxy, firstBytes, null);
  }

  /** limits.max_refused_sessions is reached: this refused client is not held in 554 mode. */
  #refusedOverCap(client: string, r: Reply | null): void {
    defenseFired(this.#log, this.#deps.defenseMetrics, { rule: 'refused_sessions', sessionId: this.sessionId, client, limit: 'limits.max_refused_sessions', reply: r === null ? null : `${r.code}${r.enhanced === null ? '' : ` ${r.enhanced}`}` });
  }

  /**
   * Pregreet: a network remembered as an early talker is refused at once; one that passed before
   * goes straight on; any other gets `220-` and the greeting text, and the session starts only if
   * it sends nothing for the wait. The machine then sends the final `220 ` line; a connect-stage
   * refusal comes after it, as the answer to each command (machine.ts, #refuseAfterBegunGreeting),
   * since a reply's code cannot change midway (RFC 5321 4.2.1). An early talker likewise gets the
   * final `220 ` line before its refusal.
   * The wait is this connection's one timer-wheel entry (no session, so no machine deadline, yet).
   */
  #pregreet(p: NonNullable<ConnectionDeps['pregreet']>, peer: Peer, proxy: Peer | null, firstBytes: Buffer | null): void {
    const s = this.#socket;
    s.off('data', Connection.#socketData);
    // Bytes that arrive before the session starts: kept, for a client that passed before.
    const early: Buffer[] = firstBytes === null ? [] : [firstBytes];
    /** `220-` is out and the wait runs (on this connection's wheel entry). */
    let isPaused = false;
    const onEarly = (chunk: Buffer): void => {
      this.#deps.onRead?.(chunk.length);
      if (early.length < 16) early.push(chunk);
      // An early talker is answered at once, not after the wait.
      if (isPaused) {
        isPaused = false;
        this.#onTimer = null;
        this.#wheel.cancel(this.#timer);
        refuse('talked first', true);
      }
    };
    s.on('data', onEarly);
    // `isBegun`: `220-` was sent, so the greeting is ended first (RFC 5321 4.2.1: a reply's code
    // cannot change midway); the refusal then answers what the client sent early.
    const refuse = (how: 'remembered' | 'talked first', isBegun = false): void => {
      s.off('data', onEarly);
      const reply = p.action === 'reject' ? REPLY.pregreetRejected : REPLY.pregreetDisconnected;
      defenseFired(this.#log, this.#deps.defenseMetrics, { rule: 'pregreet', sessionId: this.sessionId, client: peer.address, limit: `${p.waitMs / 1000}s`, value: how, reply: `${reply.code} ${reply.enhanced}` });
      this.#deps.metrics?.reply(reply.code);
      if (how === 'talked first') void p.memory.rememberRefused(peer.address, reply, Date.now());
      this.#write(`${isBegun ? formatReply(REPLY.greeting(p.hostname)) : ''}${formatReply(reply)}`);
      this.#close();
    };
    const proceed = (isBegun: boolean): void => {
      s.off('data', onEarly);
      s.on('data', Connection.#socketData);
      this.#startSession(peer, proxy, early.length === 0 ? null : Buffer.concat(early), null, isBegun);
    };
    void p.memory.state(peer.address).then((state) => {
      if (this.#isClosed) return;
      if (state === 'refused') return refuse('remembered');
      if (state === 'passed') return proceed(false);
      if (early.length > 0) return refuse('talked first');
      this.#write(`220-${p.hostname} ESMTP Portcullis\r\n`);
      isPaused = true;
      // On the process's timer wheel like every other wait (fires at most one slot late, never
      // early): 10,000 paused connections are 10,000 wheel entries, not 10,000 Node timers.
      this.#waitShell(Date.now() + p.waitMs, () => {
        isPaused = false;
        this.#onTimer = null;
        if (this.#isClosed) return;
        void p.memory.rememberPassed(peer.address);
        proceed(true);
      });
    });
  }

  /** `refusal`: 554 mode, the reply that replaces the greeting. `isGreetingBegun`: `220-` was sent (pregreet). */
  #startSession(peer: Peer, proxy: Peer | null, firstBytes: Buffer | null, refusal: Reply | null, isGreetingBegun = false): void {
    const s = this.#socket;
    const local = { address: normalizeAddress(s.localAddress ?? '0.0.0.0'), port: s.localPort ?? 0 };
    const isRelayClient = this.#deps.isRelayClient(peer.address);
    this.#peerAddress = peer.address;
    this.#deps.log.info(
      { sid: this.sessionId, client: peer.address, port: peer.port, relay: isRelayClient, ...(proxy === null ? {} : { proxy: proxy.address, proxyPort: proxy.port }) },
      'connect',
    );
    this.#feed({
      type: 'connected',
      nowMs: Date.now(),
      sessionId: this.sessionId,
      peer,
      local,
      isRelayClient,
      proxy,
      refusal,
      isGreetingBegun,
    });
    if (firstBytes !== null) this.#onData(firstBytes);
    // Looked up while the session runs, not before it: the greeting never waits for the store,
    // and the answer is in long before the client's first error.
    const memory = this.#deps.tarpitMemory ?? null;
    if (memory !== null) {
      void memory.isRemembered(peer.address).then((isRemembered) => {
        if (isRemembered) this.#feed({ type: 'tarpit-remembered', nowMs: Date.now() });
      });
    }
  }

  /** Stress mode went on or off (server/stress.ts): the machine's timeouts shrink or grow back. */
  setStress(isOn: boolean): void {
    if (this.#isAwaitingProxyHeader) return;
    this.#feed({ type: 'stress', nowMs: Date.now(), isOn });
  }

  /** Graceful stop: 421 at the next moment the session is not in the middle of an action. */
  shutdown(): void {
    if (this.#isAwaitingProxyHeader) {
      this.#destroy();
      return;
    }
    this.#isShuttingDown = true;
    if (this.#pendingActions === 0) this.#feed({ type: 'shutdown', nowMs: Date.now() });
  }

  /** The spool crossed its free-space floor: while low, MAIL is answered 452 4.3.1. */
  setSpoolLow(isLow: boolean): void {
    this.#feed({ type: 'spool-space', nowMs: Date.now(), isLow });
  }

  /** Past the stop deadline: drop the connection whatever it is doing. */
  abort(): void {
    this.#destroy();
  }

  #attach(s: Socket): void {
    (s as OwnedSocket)[OWNER] = this;
    s.on('data', Connection.#socketData);
    s.on('end', Connection.#socketEnd);
    if (!this.#isMachineTimed) s.on('timeout', Connection.#socketTimeout);
    s.on('error', Connection.#socketError);
    s.on('close', Connection.#socketClose);
  }

  #detach(s: Socket): void {
    s.off('data', Connection.#socketData);
    s.off('end', Connection.#socketEnd);
    s.off('timeout', Connection.#socketTimeout);
    s.off('error', Connection.#socketError);
    s.off('close', Connection.#socketClose);
    (s as OwnedSocket)[OWNER] = undefined;
  }

  #feed(input: Input): void {
    if (this.#isClosed) return;
    try {
      this.#handle(this.#machine.step(input));
    } catch (err) {
      // Our bug, not the peer's: this connection only.
      this.#log.error({ err }, 'internal error in session');
      this.#deps.metrics?.reply(REPLY.internalError.code);
      this.#write(formatReply(REPLY.internalError));
      this.#close();
    }
  }

  #handle(outputs: Output[]): void {
    let text = '';
    let closeAfter = false;
    let isQuit = false;
    let startTls = false;
    let lastReply: Reply | null = null;
    const isDebug = this.#deps.log.isLevelEnabled('debug');
    const metrics = this.#deps.metrics ?? null;
    outputs: for (const o of outputs) {
      switch (o.type) {
        case 'reply': {
          if (metrics !== null && o.reply.code >= 400) metrics.reply(o.reply.code);
          const wire = formatReply(o.reply);
          text += wire;
          lastReply = o.reply;
          if (isDebug) this.#log.debug({ dir: 'S', reply: wire.slice(0, -2) }, 'S');
          break;
        }
        case 'log':
          if (o.level === 'debug') {
            if (isDebug) this.#log.debug({ dir: 'C', ...o.fields }, o.msg);
          } else this.#log[o.level](o.fields ?? {}, o.msg);
          break;
        case 'commit': {
          const bytes = o.message.size;
          this.#runAction(
            this.#deps.spool.commit(o.message, o.message.rest.kind === 'spilled' ? (this.#body?.file ?? null) : null).then(
              (): Input => ({ type: 'committed', nowMs: Date.now() }),
              (err: unknown): Input => ({ type: 'commit-failed', nowMs: Date.now(), reason: err instanceof Error ? err.message : String(err) }),
            ),
            () => ({ type: 'commit-failed', nowMs: Date.now(), reason: 'spool commit timed out' }),
            // Counted only when the commit's own result is fed (answered 250), not after a timeout.
            metrics === null ? undefined : (input) => {
              if (input.type === 'committed') metrics.messageAccepted(bytes);
            },
          );
          break;
        }
        case 'policy': {
          const verdict = this.#askPolicy(o);
          if (!(verdict instanceof Promise)) {
            // Answered synchronously (every check from its cache): stepped in at once, with no
            // promise, no timer and no turn of the event loop. Its outputs join this batch (the
            // loop reaches what is pushed), so however many pipelined commands it unblocks, their
            // replies still go out in the one write below.
            try {
              outputs.push(...this.#machine.step({ type: 'verdict', nowMs: Date.now(), verdict }));
            } catch (err) {
              // The replies before our bug still go out first, as they would have in their own write.
              if (text !== '') this.#write(text);
              throw err;
            }
            break;
          }
          this.#runAction(
            verdict.then(
              (v): Input => ({ type: 'verdict', nowMs: Date.now(), verdict: v }),
              (err: unknown): Input => {
                this.#log.error({ err }, 'policy runner failed');
                return { type: 'verdict', nowMs: Date.now(), verdict: RUNNER_THREW };
              },
            ),
            () => ({ type: 'verdict', nowMs: Date.now(), verdict: { action: 'disconnect', reply: REPLY.internalError, check: 'pipeline', reason: 'policy timed out' } }),
          );
          break;
        }
        case 'transform': {
          const transform = this.#deps.transform ?? null;
          if (transform === null) throw new Error('the machine asked for a transform, but none is configured');
          this.#runAction(
            transform(o.message).then(
              (message): Input => ({ type: 'transformed', nowMs: Date.now(), message }),
              (err: unknown): Input => {
                this.#log.warn({ err }, 'transform failed');
                return { type: 'transform-failed', nowMs: Date.now(), reason: err instanceof Error ? err.message : String(err) };
              },
            ),
            () => ({ type: 'transform-failed', nowMs: Date.now(), reason: 'transform timed out' }),
          );
          break;
        }
        case 'append-body': {
          if (this.#body === null || this.#body.seq !== o.seq) {
            void this.#body?.file.remove();
            this.#body = { seq: o.seq, file: this.#deps.spool.bodyFile(`${this.sessionId}-${o.seq}`) };
          }
          this.#body.file.append(o.chunks);
          break;
        }
        case 'discard-body': {
          const body = this.#body;
          if (body !== null && body.seq === o.seq) {
            this.#body = null;
            void body.file.remove();
          }
          break;
        }
        case 'start-tls':
          startTls = true;
          break;
        case 'defense':
          defenseFired(this.#log, this.#deps.defenseMetrics, {
            rule: o.rule,
            sessionId: this.sessionId,
            client: this.#peerAddress,
            limit: o.limit,
            value: o.value ?? null,
            reply: o.reply === undefined ? null : `${o.reply.code}${o.reply.enhanced == null ? '' : ` ${o.reply.enhanced}`}`,
          });
          break;
        case 'refused-mode': {
          // Security: a client refused by a connect-stage verdict counts toward the same cap as a
          // blocked one (#admitted); past it, it is closed right after its 554, nothing more sent.
          const holdRefused = this.#deps.holdRefused ?? null;
          if (holdRefused === null) break;
          const hold = holdRefused();
          if (hold === null) {
            this.#refusedOverCap(this.#peerAddress, lastReply);
            // After a begun greeting's final 220 (pregreet) there was no refusal yet: a 421,
            // which RFC 5321 3.8 lets a server send unasked, tells the client before the close.
            if (lastReply?.code === 220) {
              metrics?.reply(REPLY.refusedSessionOver.code);
              text += formatReply(REPLY.refusedSessionOver);
            }
            closeAfter = true;
            break outputs;
          }
          const admitted = this.#release;
          this.#release = admitted === null ? hold : () => (admitted(), hold());
          break;
        }
        case 'close':
          closeAfter = true;
          isQuit = o.quit === true;
          break;
        default:
          // A new output type must be handled here, or the type check fails.
          assertNever(o);
      }
    }
    // RFC 2920: the replies to one batch of input go out in one write.
    if (text !== '') this.#write(text);
    if (closeAfter) {
      this.#close(isQuit);
      return;
    }
    if (startTls) {
      this.#startTls();
      return;
    }
    this.#applyFlowControl();
    if (this.#onTimer === null) this.#waitMachine();
  }

  /** The policy's verdict for one request: a value when it answered synchronously; a throw is a disconnect, logged. */
  #askPolicy(request: Extract<Output, { type: 'policy' }>): PolicyVerdict | Promise<PolicyVerdict> {
    const runner = this.#deps.policy;
    if (runner === null) return CONTINUE;
    const body = this.#body?.file ?? null;
    const readSpilled = body === null ? null : (offset: number, bytes: number) => body.read(offset, bytes);
    try {
      return runner(request, readSpilled);
    } catch (err) {
      this.#log.error({ err }, 'policy runner failed');
      return RUNNER_THREW;
    }
  }

  /**
   * Runs one action the machine waits for. Every wait is bounded: past the deadline the action
   * counts as failed (`onTimeout`), and its late result is ignored.
   */
  #runAction(p: Promise<Input>, onTimeout: () => Input, onResult?: (input: Input) => void): void {
    this.#pendingActions++;
    let isSettled = false;
    const settle = (input: Input): void => {
      if (isSettled) return;
      isSettled = true;
      clearTimeout(timer);
      this.#pendingActions--;
      this.#feed(input);
      if (this.#isShuttingDown && this.#pendingActions === 0) this.#feed({ type: 'shutdown', nowMs: Date.now() });
    };
    const timer = setTimeout(() => {
      this.#log.warn({ timeoutMs: this.#deps.actionTimeoutMs }, 'action timed out');
      settle(onTimeout());
    }, this.#deps.actionTimeoutMs);
    void p.then((input) => {
      if (!isSettled) onResult?.(input);
      settle(input);
    });
  }

  /**
   * Stop reading while the machine waits, or while the client is not reading our replies
   * (Security: a client that pipelines endlessly and never reads would otherwise grow our
   * write buffer without bound); pick the timeout for what comes next.
   */
  #applyFlowControl(): void {
    const s = this.#socket;
    const phase = this.#machine.phase;
    if (phase === 'waiting') {
      // Reading stops only if the client sends more while we wait (#onData): a verdict or commit
      // that comes back at once then costs no read stop/start. The action's own deadline (shorter
      // than any session timeout) bounds the wait; the session timeout is re-armed after it.
      return;
    }
    // Security: a batch of pipelined commands is answered a few KiB at a time (machine.ts,
    // MAX_REPLY_LINES_PER_BATCH): no more is read, nor answered, until what was written has gone
    // out; with room in the socket the rest follows on the next turn of the event loop.
    if (this.#machine.isHeldForOutput) {
      s.pause();
      const more = (): void => this.#feed({ type: 'output-drained', nowMs: Date.now() });
      if (s.writableNeedDrain) {
        s.once('drain', more);
        if (!this.#isMachineTimed) s.setTimeout(this.#deps.commandTimeoutMs);
      } else setImmediate(more);
      return;
    }
    // Security: a client faster than the disk must not fill memory with queued body writes.
    const body = this.#body?.file ?? null;
    if (body !== null && body.pendingBytes > BODY_BACKLOG_BYTES) {
      s.pause();
      if (!this.#isWaitingForBody) {
        this.#isWaitingForBody = true;
        const resume = (): void => {
          this.#isWaitingForBody = false;
          if (!this.#isClosed) this.#applyFlowControl();
        };
        body.flushed().then(resume, resume);
      }
      if (!this.#isMachineTimed) s.setTimeout(this.#deps.dataTimeoutMs);
      return;
    }
    if (s.writableNeedDrain) {
      s.pause();
      s.once('drain', () => this.#applyFlowControl());
      // The write timeout: a client that never reads is as idle as one that never writes.
      if (!this.#isMachineTimed) s.setTimeout(this.#deps.commandTimeoutMs);
      return;
    }
    if (!this.#isMachineTimed) s.setTimeout(phase === 'data' ? this.#deps.dataTimeoutMs : this.#deps.commandTimeoutMs);
    if (s.isPaused()) s.resume();
  }

  #startTls(): void {
    const ctx = this.#deps.secureContext;
    const raw = this.#socket;
    this.#detach(raw);
    raw.setTimeout(0);
    if (ctx === null) {
      this.#feed({ type: 'tls-failed', nowMs: Date.now(), reason: 'no TLS context' });
      return;
    }
    const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: ctx });
    this.#socket = secure;
    const handshakeMs = this.#deps.tlsHandshakeTimeoutMs ?? this.#deps.commandTimeoutMs;
    this.#waitShell(Date.now() + handshakeMs, () => secure.destroy(new Error(`TLS handshake not done within ${handshakeMs} ms`)));
    const clearHandshakeTimer = (): void => {
      this.#onTimer = null;
      this.#wheel.cancel(this.#timer);
    };
    secure.once('secure', () => {
      clearHandshakeTimer();
      secure.off('error', onHandshakeError);
      secure.off('end', onHandshakeEnd);
      this.#attach(secure);
      this.#feed({ type: 'tls-ready', nowMs: Date.now(), tls: { protocol: secure.getProtocol() ?? 'unknown', cipher: secure.getCipher()?.name ?? 'unknown' } });
    });
    const onHandshakeError = (err: Error): void => {
      clearHandshakeTimer();
      this.#feed({ type: 'tls-failed', nowMs: Date.now(), reason: err.message });
    };
    // Security: the raw socket's listeners are detached while the handshake runs, and the TLS
    // socket inherits the listener's allowHalfOpen, so a client's FIN before, during or right
    // after its ClientHello arrives only as 'end' here. Unheard, it left the socket in CLOSE-WAIT
    // and the session counted as live until the handshake timer (the command timeout, 300 s):
    // a cheap way to exhaust descriptors. Such a client can never finish the handshake, so the
    // socket is released at once, without a close_notify or a grace period.
    const onHandshakeEnd = (): void => {
      clearHandshakeTimer();
      secure.off('error', onHandshakeError);
      this.#log.info({ bytesReceived: raw.bytesRead }, 'client closed during the TLS handshake');
      this.#destroy();
    };
    secure.once('end', onHandshakeEnd);
    secure.once('error', onHandshakeError);
    secure.once('close', () => {
      clearHandshakeTimer();
      this.#destroy();
    });
  }

  #write(text: string): void {
    const s = this.#socket;
    if (!s.destroyed && s.writable) s.write(text);
  }

  /**
   * Ends the connection after its last reply. After QUIT the socket is destroyed as soon as the
   * 221 is handed to the kernel: nothing the client sends later counts, and a client that resets
   * the connection after reading 221 (smtp-source does) would otherwise cost an error object with
   * its stack trace per connection (about 5 % of a worker at one message per connection). Other
   * closes (421s, refusals) half-close and keep reading until the client closes or the grace ends,
   * so unread input cannot make the kernel answer with a reset that discards the reply.
   */
  #close(isQuit = false): void {
    if (this.#isClosed) return;
    const s = this.#socket;
    if (isQuit) s.end(() => s.destroy());
    else s.end();
    // A zombie that never reads or closes must not hold the connection: destroy after a grace.
    this.#finish();
    this.#waitShell(Date.now() + CLOSE_GRACE_MS, () => this.#destroy());
  }

  #destroy(): void {
    if (!this.#socket.destroyed) this.#socket.destroy();
    this.#finish();
    this.#onTimer = null;
    this.#wheel.cancel(this.#timer);
  }

  #finish(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#release?.();
    this.#release = null;
    if (this.#onTimer === null) this.#wheel.cancel(this.#timer);
    // A client that reached the tarpit is remembered: its next session starts delayed.
    if (this.#machine.isTarpitted && this.#peerAddress !== '') void this.#deps.tarpitMemory?.remember(this.#peerAddress, Date.now());
    // Whatever state the session was in, its share of the process's body budget goes back.
    this.#machine.dispose();
    if (this.#body !== null) {
      void this.#body.file.remove();
      this.#body = null;
    }
    const session = this.#machine.session;
    if (session !== null && this.#log.isLevelEnabled('info')) {
      this.#log.info(
        { ...session.counters, tls: session.tls?.protocol ?? null, helo: session.helo?.name ?? null, durationMs: Date.now() - this.#startedMs },
        'disconnect',
      );
    }
    this.#deps.onClose(this);
  }
}
