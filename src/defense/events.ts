// The one place a connection defense reports that it fired: one log line (session id, client,
// rule, limit) and one count in portcullis_defense_events_total{rule}. Every defense (admission,
// 554 mode, pregreet, deadlines, rates, tarpit, stress mode, PROXY, memory budget) calls
// defenseFired; docs/defense.md lists the rules and what each line means.
// The rule names are a fixed set so the metric's label set stays bounded.

import type { Logger } from 'pino';

export const DEFENSE_RULES = [
  'access_block',
  'connect_verdict',
  'max_connections',
  'max_connections_per_ip',
  'max_connections_per_network',
  'connection_rate_per_ip',
  'refused_sessions',
  'refused_session_closed',
  'pregreet',
  'command_deadline',
  'min_data_rate',
  'session_max',
  'idle_commands',
  'tarpit',
  'tarpit_disconnect',
  'stress_on',
  'stress_off',
  'proxy_untrusted',
  'proxy_timeout',
  'proxy_invalid',
  'memory_budget',
] as const;

export type DefenseRule = (typeof DEFENSE_RULES)[number];

/** What a defense counts; the Metrics class implements it, null counts nothing. */
export interface DefenseMetrics {
  defenseFired(rule: DefenseRule): void;
}

export type DefenseEvent = {
  rule: DefenseRule;
  /** The session's id, or null before a session exists (admission, PROXY). */
  sessionId: string | null;
  /** The real client's address (from PROXY when trusted), or null when unknown. */
  client: string | null;
  /** The configured limit that was passed, as the operator wrote it (e.g. 20, "60/min", "10s"). */
  limit?: string | number | null;
  /** What was measured against the limit, when there is a number to show. */
  value?: string | number | null;
  /** The reply sent, if one was (e.g. "421 4.7.0"). */
  reply?: string | null;
};

/** Logs one line at info ("defense: <rule>") and counts it. Never throws. */
export function defenseFired(log: Logger, metrics: DefenseMetrics | null | undefined, event: DefenseEvent): void {
  metrics?.defenseFired(event.rule);
  log.info(
    {
      sid: event.sessionId ?? undefined,
      client: event.client ?? undefined,
      rule: event.rule,
      limit: event.limit ?? undefined,
      value: event.value ?? undefined,
      reply: event.reply ?? undefined,
    },
    `defense: ${event.rule}`,
  );
}
