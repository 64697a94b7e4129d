// The one driver tests use to play a session through the sans-I/O machine: it feeds inputs
// (with the time of a shared test clock), records every output, and answers the actions the
// way the connection shell would, or leaves them to the test. It never opens a socket, starts a
// timer or reads the real clock. Policy outputs can go through a real PolicyPipeline, so verdict
// memory under test is the production code, never a stand-in.

import { contentChunks } from '../../src/message/accepted.ts';
import { defaultConfig } from '../../src/config/types.ts';
import type { PolicyPipeline } from '../../src/policy/pipeline.ts';
import { SmtpMachine, type Input, type Output, type PolicyVerdict } from '../../src/protocol/machine.ts';
import type { MachineConfig } from '../../src/protocol/machine-config.ts';
import { formatReply, type Reply } from '../../src/protocol/replies.ts';
import { machineConfigFrom } from '../../src/server/machine-config.ts';

export type PolicyRequest = Extract<Output, { type: 'policy' }>;

/** What the driver reads the time from: each input's `nowMs` is `now()`. */
export type DriveClock = { now(): number; advance(ms: number): void };

/** A test clock shared by the machine (each input's `nowMs`) and the pipeline's checks (`now`). */
export class TestClock implements DriveClock {
  nowMs: number;
  constructor(startMs = 1_000_000) {
    this.nowMs = startMs;
  }
  readonly now = (): number => this.nowMs;
  advance(ms: number): void {
    this.nowMs += ms;
  }
}

export type DriveOptions = {
  clock?: DriveClock;
  /** Client address (default 192.0.2.1) and whether it may relay. */
  peer?: string;
  isRelayClient?: boolean;
  sessionId?: string;
  /**
   * Who answers `policy` outputs: `manual` (the test steps a `verdict` itself), `continue`
   * (every check has no opinion), or a runner (a PolicyPipeline's `run`): its answers are
   * stepped in order; an asynchronous one is answered by `settle()`.
   */
  policy?: 'manual' | 'continue' | ((request: PolicyRequest) => PolicyVerdict | Promise<PolicyVerdict>);
  /** `accept`: every commit is answered `committed` at once (its body kept in `stored`). */
  commits?: 'manual' | 'accept';
  /** Step `connected` in the constructor (default true). */
  isConnecting?: boolean;
  /** Advance the clock by this much before every `send` (default 1 ms). */
  stepMs?: number;
};

export class MachineDriver {
  readonly machine: SmtpMachine;
  readonly clock: DriveClock;
  /** Every output, in order, including those the driver answered. */
  readonly outputs: Output[] = [];
  /** Every reply, in order. */
  readonly replies: Reply[] = [];
  /** The body of every message committed (commits: accept). */
  readonly stored: Buffer[] = [];
  isClosed = false;
  readonly #opts: DriveOptions;
  /** What the machine sent to the body file of the current transaction (the shell's file). */
  #spilled: Buffer[] = [];
  /** An asynchronous policy answer not yet stepped into the machine. */
  #pending: Promise<PolicyVerdict> | null = null;

  constructor(cfg: MachineConfig, opts: DriveOptions = {}) {
    this.machine = new SmtpMachine(cfg);
    this.clock = opts.clock ?? new TestClock();
    this.#opts = opts;
    if (opts.isConnecting ?? true) this.connect();
  }

  connect(): Output[] {
    return this.step({
      type: 'connected',
      nowMs: this.clock.now(),
      sessionId: this.#opts.sessionId ?? 'SID',
      peer: { address: this.#opts.peer ?? '192.0.2.1', port: 40000 },
      local: { address: '127.0.0.1', port: 25 },
      isRelayClient: this.#opts.isRelayClient ?? false
    });
  }

  /** Steps one input; returns its outputs and those of the answers the driver gave at once. */
  step(input: Input): Output[] {
    const produced: Output[] = [];
    const queue = [...this.machine.step(input)];
    // As the shell does: once a batch's replies are out, the rest of the input is answered.
    const drainIfHeld = (): void => {
      if (queue.length === 0 && this.machine.isHeldForOutput) queue.push(...this.machine.step({ type: 'output-drained', nowMs: this.clock.now() }));
    };
    drainIfHeld();
    while (queue.length > 0) {
      const o = queue.shift()!;
      produced.push(o);
      this.outputs.push(o);
      if (o.type === 'reply') this.replies.push(o.reply);
      else if (o.type === 'append-body') this.#spilled.push(...o.chunks);
      else if (o.type === 'discard-body') this.#spilled = [];
      else if (o.type === 'close') this.isClosed = true;
      else if (o.type === 'commit' && this.#opts.commits === 'accept') {
        const m = o.message;
        this.stored.push(Buffer.concat(m.rest.kind === 'memory' ? contentChunks(m) : [...m.head, ...this.#spilled]));
        this.#spilled = [];
        queue.push(...this.machine.step({ type: 'committed', nowMs: this.clock.now() }));
      } else if (o.type === 'policy') {
        const policy = this.#opts.policy ?? 'manual';
        if (policy === 'manual') continue;
        const verdict = policy === 'continue' ? ({ action: 'continue' } as const) : policy(o);
        if (verdict instanceof Promise) this.#pending = verdict;
        else queue.push(...this.machine.step({ type: 'verdict', nowMs: this.clock.now(), verdict }));
      }
      drainIfHeld();
    }
    return produced;
  }

  /** Steps the asynchronous policy answers until none is outstanding; returns their outputs. */
  async settle(): Promise<Output[]> {
    const produced: Output[] = [];
    while (this.#pending !== null) {
      const verdict = await this.#pending;
      this.#pending = null;
      produced.push(...this.step({ type: 'verdict', nowMs: this.clock.now(), verdict }));
    }
    return produced;
  }

  /** Advances the clock by `stepMs`; returns the new time (for an input the test builds). */
  tick(): number {
    this.clock.advance(this.#opts.stepMs ?? 1);
    return this.clock.now();
  }

  /** Sends bytes (after a `tick`); returns each reply, formatted. */
  send(data: string | Buffer): string[] {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    return formatted(this.step({ type: 'bytes', nowMs: this.tick(), data: bytes }));
  }

  /** `send`, then `settle`: for a driver whose policy runner answers asynchronously. */
  async play(data: string | Buffer): Promise<string[]> {
    return [...this.send(data), ...formatted(await this.settle())];
  }

  /** The TLS handshake completed (the shell's answer to `start-tls`). */
  tlsReady(protocol = 'TLSv1.3', cipher = 'TLS_AES_256_GCM_SHA384'): string[] {
    return formatted(this.step({ type: 'tls-ready', nowMs: this.clock.now(), tls: { protocol, cipher } }));
  }

  /** Every reply line so far ("250-PIPELINING", "250 DSN", ...), as the client reads them. */
  replyLines(): string[] {
    return this.replies.flatMap((r) => formatReply(r).split('\r\n').filter((l) => l !== ''));
  }
}

/** Each reply among `outs`, formatted without its final CRLF (multi-line replies keep inner CRLFs). */
export function formatted(outs: readonly Output[]): string[] {
  return outs.filter((o) => o.type === 'reply').map((o) => formatReply((o as Extract<Output, { type: 'reply' }>).reply).trimEnd());
}

export type PolicySessionOptions = {
  /** Client address (default 192.0.2.5). */
  address?: string;
  maxRefusals?: number;
  nowMs?: () => number;
};

/**
 * Plays `input` from a fresh connection through `pipeline` (commits accepted), the way the
 * connection does; returns the last line of every reply, greeting included.
 */
export async function policySession(pipeline: PolicyPipeline, input: string, opts: PolicySessionOptions = {}): Promise<string[]> {
  const cfg = defaultConfig();
  cfg.domains.local = ['example.test'];
  const clock: DriveClock = opts.nowMs !== undefined ? { now: opts.nowMs, advance: () => undefined } : new TestClock(0);
  const d = new MachineDriver(
    machineConfigFrom(cfg, { isTlsAvailable: false, policyStages: pipeline.stages, maxPolicyRefusals: opts.maxRefusals ?? 3 }),
    { clock, peer: opts.address ?? '192.0.2.5', sessionId: 'S', policy: pipeline.run, commits: 'accept', isConnecting: false, stepMs: 0 },
  );
  d.connect();
  await d.settle();
  await d.play(input);
  return d.replies.map((r) => formatReply(r).trimEnd().split('\r\n').pop()!);
}

/** The machine configuration the core tests start from: the embedded default's limits (the RFC
 *  minimums), with a test host name, one local domain, a 1 MiB size limit and TLS available. */
export function testMachineConfig(over: Partial<MachineConfig> = {}): MachineConfig {
  // The time limits and the tarpit are off unless a test asks for them: most tests play errors
  // and waits of their own and expect every reply at once.
  const { limits: _limits, tarpit: _tarpit, maxIdleCommands: _idle, ...base } = machineConfigFrom(defaultConfig(), { isTlsAvailable: true });
  return {
    ...base,
    hostname: 'mx.example.test',
    maxMessageBytes: 1 << 20,
    localDomains: new Set(['example.test']),
    ...over,
  };
}
