// Transcript files (C:/S: dialogues) and the runner that plays them through the sans-I/O core.
// The socket runner (socket-runner.ts) plays the same files against a real server.
//
// Format, one directive per line:
//   # comment
//   @config smtp.max_errors = 3     TOML key = TOML value, applied to the embedded default config
//   @peer 192.0.2.7                 client address (core runs only; sockets are always loopback)
//   @tls                            (core: the TLS handshake completes) / (socket: do the handshake)
//   C: EHLO a.example               send the line and CRLF; consecutive C lines go in one write
//   C~ "raw\n.\r\n"                 send raw bytes written as a JSON string (parsed, never evaluated)
//   S: 250-PIPELINING               expect exactly this reply line
//   S: 250 *                        "*" matches any run of characters
//   S: 5xx                          a code class: any single-line reply of that class
//   @closed                         the server has closed the connection
//   @spool-count 1                  messages committed so far (core: commit outputs)
//   @stored "text"                  content (Received: header removed) of the last stored message
//   @now +300s                      advance the clock (units ms, s, m, h): the machine's nowMs in core
//                                   runs, and the policy pipeline's (and so the checks') clock in both
//   @verdict CHECK[@STAGE]=ACTION[*N] [CODE X.Y.Z TEXT]
//                                   what the stub check CHECK answers on its next N calls (default 1)
//
// @verdict, in detail. A transcript with @verdict lines runs with a REAL PolicyPipeline (so verdict
// memory is the production code) holding one stub check per CHECK named, in order of first
// appearance, at the stages named for it anywhere in the file (all five stages when none is
// named). STAGE is connect, helo, mail, rcpt or data; without it the line applies to the check's
// next calls at any of its stages. ACTION is continue, accept, tempfail, reject or disconnect.
// From the line on, the stub answers ACTION on its next N calls (at that stage) and `continue`
// after them: so a later refusal can only come from verdict memory, and a test fails if memory
// is switched off. A line replaces what an earlier one for the same check and stage (or the same
// check without a stage) had left unused; a call uses its stage's line before the any-stage one.
// A call the pipeline answers from memory never reaches the stub and uses up nothing.
// The reply is CODE X.Y.Z TEXT when given, else tempfail "451 4.7.1 Try again later", reject
// "550 5.7.1 Refused by policy", disconnect "421 4.7.1 Closing connection". The stub's verdict
// key is the pipeline's default (the recipient at rcpt, '' elsewhere), with no TTL and no store.
// Over a socket the server runs the same stubs in its pipeline (same process), and @now moves
// that pipeline's clock; the machine's nowMs is then the real time.

import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { parse as parseToml } from 'smol-toml';
import { defaultConfig, type Config } from '../../src/config/types.ts';
import type { Check } from '../../src/policy/check.ts';
import { PolicyPipeline } from '../../src/policy/pipeline.ts';
import type { PolicyVerdict } from '../../src/protocol/machine.ts';
import { reply, type Reply } from '../../src/protocol/replies.ts';
import type { PolicyStage } from '../../src/protocol/session.ts';

export type Step =
  | { kind: 'send'; data: Buffer; text: string }
  | { kind: 'expect'; pattern: string; line: number }
  | { kind: 'tls' }
  | { kind: 'closed'; line: number }
  | { kind: 'spool-count'; count: number; line: number }
  | { kind: 'stored'; content: string; line: number }
  | { kind: 'now'; advanceMs: number }
  | { kind: 'verdict'; check: string; stage: PolicyStage | null; action: PolicyVerdict['action']; count: number; reply: Reply | null };

/** The stub checks a transcript's @verdict lines name: each with the stages named for it. */
export type StubCheckSpec = { name: string; stages: PolicyStage[] };

export type Transcript = { name: string; config: Config; peer: string; steps: Step[]; checks: StubCheckSpec[] };

const STAGES: readonly PolicyStage[] = ['connect', 'helo', 'mail', 'rcpt', 'data'];
const ACTIONS: ReadonlyArray<PolicyVerdict['action']> = ['continue', 'accept', 'tempfail', 'reject', 'disconnect'];
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function snakeToCamel(s: string): string {
  return s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

export function applyConfigLine(cfg: Config, assignment: string): void {
  const eq = assignment.indexOf('=');
  const key = assignment.slice(0, eq).trim();
  const value = (parseToml(`v = ${assignment.slice(eq + 1).trim()}`) as { v: unknown }).v;
  const [section, name] = key.split('.');
  const target = (cfg as unknown as Record<string, Record<string, unknown>>)[section];
  const field = snakeToCamel(name);
  if (target === undefined || !(field in target)) throw new Error(`transcript: unknown config key ${key}`);
  target[field] = value;
}

export function parseTranscript(name: string, text: string): Transcript {
  const config = defaultConfig();
  config.domains.local = ['example.test'];
  config.smtp.hostname = 'mx.example.test';
  // Transcripts show the dialog, not its pace: the tarpit (tested in deadlines.test.ts and
  // test/integration/tarpit.test.ts) would hold the replies of those that collect errors.
  config.tarpit.initialDelayMs = 0;
  let peer = '127.0.0.1';
  const steps: Step[] = [];
  const checks: StubCheckSpec[] = [];
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const raw = lines[n].replace(/\r$/, '');
    const line = n + 1;
    if (raw.trim() === '' || raw.startsWith('#')) continue;
    if (raw.startsWith('C: ')) {
      const t = raw.slice(3);
      steps.push({ kind: 'send', data: Buffer.from(`${t}\r\n`, 'utf8'), text: t });
    } else if (raw === 'C:') {
      steps.push({ kind: 'send', data: Buffer.from('\r\n'), text: '' });
    } else if (raw.startsWith('C~ ')) {
      const s = JSON.parse(raw.slice(3)) as string;
      steps.push({ kind: 'send', data: Buffer.from(s, 'latin1'), text: s });
    } else if (raw.startsWith('S: ')) {
      steps.push({ kind: 'expect', pattern: raw.slice(3), line });
    } else if (raw.startsWith('@config ')) {
      applyConfigLine(config, raw.slice(8));
    } else if (raw.startsWith('@peer ')) {
      peer = raw.slice(6).trim();
    } else if (raw === '@tls') {
      steps.push({ kind: 'tls' });
    } else if (raw === '@closed') {
      steps.push({ kind: 'closed', line });
    } else if (raw.startsWith('@spool-count ')) {
      steps.push({ kind: 'spool-count', count: Number(raw.slice(13)), line });
    } else if (raw.startsWith('@stored ')) {
      steps.push({ kind: 'stored', content: JSON.parse(raw.slice(8)) as string, line });
    } else if (raw.startsWith('@now ')) {
      const m = /^\+(\d+)(ms|s|m|h)$/.exec(raw.slice(5).trim());
      if (m === null) throw new Error(`${name}:${line}: @now wants +N followed by ms, s, m or h: ${raw}`);
      steps.push({ kind: 'now', advanceMs: Number(m[1]) * UNIT_MS[m[2]] });
    } else if (raw.startsWith('@verdict ')) {
      const step = parseVerdict(raw.slice(9).trim());
      if (step === null) throw new Error(`${name}:${line}: cannot parse @verdict (CHECK[@STAGE]=ACTION[*N] [CODE X.Y.Z TEXT]): ${raw}`);
      let spec = checks.find((c) => c.name === step.check);
      if (spec === undefined) checks.push((spec = { name: step.check, stages: [] }));
      if (step.stage !== null && !spec.stages.includes(step.stage)) spec.stages.push(step.stage);
      steps.push(step);
    } else {
      throw new Error(`${name}:${line}: cannot parse transcript line: ${raw}`);
    }
  }
  for (const c of checks) if (c.stages.length === 0) c.stages.push(...STAGES);
  return { name, config, peer, steps, checks };
}

function parseVerdict(text: string): Extract<Step, { kind: 'verdict' }> | null {
  const m = /^([a-z0-9-]+)(?:@([a-z]+))?=([a-z]+)(?:\*(\d+))?(?: (\d{3}) (\d\.\d{1,3}\.\d{1,3}) (.+))?$/.exec(text);
  if (m === null) return null;
  const stage = (m[2] ?? null) as PolicyStage | null;
  const action = m[3] as PolicyVerdict['action'];
  if ((stage !== null && !STAGES.includes(stage)) || !ACTIONS.includes(action)) return null;
  const count = m[4] === undefined ? 1 : Number(m[4]);
  return { kind: 'verdict', check: m[1], stage, action, count, reply: m[5] === undefined ? null : reply(Number(m[5]), m[6], m[7]) };
}

const DEFAULT_REPLY: Record<'tempfail' | 'reject' | 'disconnect', Reply> = {
  tempfail: reply(451, '4.7.1', 'Try again later'),
  reject: reply(550, '5.7.1', 'Refused by policy'),
  disconnect: reply(421, '4.7.1', 'Closing connection'),
};

/**
 * The stub checks of one run of a transcript, inside a real PolicyPipeline (see the header for
 * the semantics). Build one per run: `apply` changes what the stubs answer next.
 */
export class TranscriptPolicy {
  /** null when the transcript has no @verdict line: the machine then asks no policy at all. */
  readonly pipeline: PolicyPipeline | null;
  /** What each "check@stage" (or "check@" for any stage) answers next, front first. */
  readonly #queued = new Map<string, Array<PolicyVerdict>>();

  constructor(t: Transcript, now: () => number) {
    const checks = t.checks.map((spec): Check => ({ name: spec.name, stages: spec.stages, run: (ctx) => this.#answer(spec.name, ctx.stage) }));
    this.pipeline = checks.length === 0 ? null : new PolicyPipeline(checks, { log: pino({ level: 'silent' }), defaultTimeoutMs: 1000, now });
  }

  apply(step: Extract<Step, { kind: 'verdict' }>): void {
    const { check, action } = step;
    const verdict: PolicyVerdict =
      action === 'continue' || action === 'accept'
        ? { action }
        : { action, reply: step.reply ?? DEFAULT_REPLY[action], check, reason: `transcript @verdict ${check}${step.stage === null ? '' : `@${step.stage}`}=${action}` };
    this.#queued.set(`${check}@${step.stage ?? ''}`, Array.from({ length: step.count }, () => verdict));
  }

  #answer(check: string, stage: PolicyStage): PolicyVerdict {
    for (const key of [`${check}@${stage}`, `${check}@`]) {
      const next = this.#queued.get(key)?.shift();
      if (next !== undefined) return next;
    }
    return { action: 'continue' };
  }
}

export function loadTranscript(path: string): Transcript {
  return parseTranscript(path.split('/').pop()!, readFileSync(path, 'utf8'));
}

export function matches(pattern: string, line: string): boolean {
  if (/^\dxx$/.test(pattern)) return line.startsWith(pattern[0]) && /^\d{3} /.test(line);
  const re = new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 's');
  return re.test(line);
}

/** Strips the Received: header (first header, with its folded lines) we prepend. */
export function withoutReceived(content: string): string {
  const m = /^Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*/.exec(content);
  return m === null ? content : content.slice(m[0].length);
}
