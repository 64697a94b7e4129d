// Checks that involve two keys (or a key and a check's own section); each runs only when the keys
// it reads were themselves valid, so one mistake is reported once.

import { CHECK_CONFIGS } from '../policy/registry.ts';
import type { CheckConfig } from './keys.ts';
import type { Config } from './types.ts';
import { durationText, show } from './validators.ts';
import { routeProblems } from './keys/routes.ts';

/** The longest an unanswered DNS query may take (see crossProblems). */
export const MAX_DNS_WAIT_MS = 30_000;

/** Checks that involve two keys; run only when both keys were themselves valid. */
export function crossProblems(config: Config, invalid: ReadonlySet<string>): string[] {
  const problems: string[] = [];
  const { certFile, keyFile } = config.tls;
  if (!invalid.has('tls.cert') && !invalid.has('tls.key') && (certFile === '') !== (keyFile === '')) {
    const [given, missing, value] = certFile === '' ? ['tls.key', 'tls.cert', keyFile] : ['tls.cert', 'tls.key', certFile];
    problems.push(`${given} = ${show(value)}: ${missing} must be set too (set both or neither)`);
  }
  // With no trusted proxy every connection would be closed unread: surely not what was meant.
  if ((config.smtp.proxyProtocol || config.listener.some((l) => l.proxyProtocol)) && config.proxy.trusted.length === 0 && !invalid.has('proxy.trusted')) {
    problems.push('smtp.proxy_protocol = true: proxy.trusted must list the load balancers allowed to send the header (every other connection is closed)');
  }
  // The budget is shared by every session of a process: one session alone must fit in it.
  const { bodyMemoryBytes, bodyMemoryBudgetBytes } = config.smtp;
  if (!invalid.has('smtp.body_memory_bytes') && !invalid.has('smtp.body_memory_budget_bytes') && bodyMemoryBudgetBytes < bodyMemoryBytes) {
    problems.push(`smtp.body_memory_budget_bytes = ${bodyMemoryBudgetBytes}: must be at least smtp.body_memory_bytes (${bodyMemoryBytes})`);
  }
  // Stress mode needs a gap between on and off, or it would flap with every connection.
  const { stressOnPercent, stressOffPercent } = config.limits;
  if (!invalid.has('limits.stress_on_percent') && !invalid.has('limits.stress_off_percent') && stressOffPercent >= stressOnPercent) {
    problems.push(`limits.stress_off_percent = ${stressOffPercent}: must be below limits.stress_on_percent (${stressOnPercent})`);
  }
  // With sqlite every node keeps its own store, so there is no cluster to share the count with.
  if (!invalid.has('limits.connection_rate_shared') && !invalid.has('state.store') && config.limits.connectionRateShared && !config.state.store.startsWith('redis')) {
    problems.push(`limits.connection_rate_shared = true: state.store must be a Redis URL ("redis://host:port/db") shared by the nodes, not ${show(config.state.store)} (each node's own store, whose count is already exact for the node): set state.store or leave connection_rate_shared false`);
  }
  const { journalMaxMessageBytes, segmentMaxBytes } = config.spool;
  if (
    !invalid.has('spool.journal_max_message_bytes') &&
    !invalid.has('spool.segment_max_bytes') &&
    journalMaxMessageBytes > segmentMaxBytes
  ) {
    problems.push(
      `spool.journal_max_message_bytes = ${journalMaxMessageBytes}: must not exceed spool.segment_max_bytes (${segmentMaxBytes})`,
    );
  }
  const { minBackoffSeconds, maxBackoffSeconds } = config.queue;
  if (!invalid.has('queue.min_backoff') && !invalid.has('queue.max_backoff') && minBackoffSeconds > maxBackoffSeconds) {
    problems.push(`queue.max_backoff = "${durationText(maxBackoffSeconds)}": must be at least queue.min_backoff ("${durationText(minBackoffSeconds)}")`);
  }
  // A DNS query that never gets an answer takes about timeout_ms x 2^tries (c-ares doubles the wait
  // at each try); the checks must answer well within the session's 120 s limit on any action.
  if (!invalid.has('dns.timeout_ms') && !invalid.has('dns.tries')) {
    const worstMs = config.dns.timeoutMs * 2 ** config.dns.tries;
    if (worstMs > MAX_DNS_WAIT_MS) {
      problems.push(
        `dns.timeout_ms = ${config.dns.timeoutMs}, dns.tries = ${config.dns.tries}: an unanswered query would wait about ` +
          `${worstMs} ms (each try waits twice as long as the one before); keep timeout_ms x 2^tries at most ${MAX_DNS_WAIT_MS}`,
      );
    }
  }
  // BATV: a signed domain must be one we receive bounces for, and signing needs a key.
  if (!invalid.has('batv.domains') && !invalid.has('domains.local')) {
    const local = new Set(config.domains.local);
    for (const domain of config.batv.domains) {
      if (!local.has(domain)) problems.push(`batv.domains = ${show(config.batv.domains)}: "${domain}" is not in domains.local, so its bounces would never be accepted here`);
    }
  }
  if (!invalid.has('batv.domains') && !invalid.has('batv.keys') && config.batv.domains.length > 0 && config.batv.keys.length === 0) {
    problems.push(`batv.domains = ${show(config.batv.domains)}: batv.keys must name at least one key (e.g. keys = [{ id = 0, secret_file = "batv.key" }])`);
  }
  // A check configured in its own section but left out of policy.checks would silently not run.
  if (!invalid.has('policy.checks')) {
    const listed = new Set<string>(config.policy.checks);
    for (const check of CHECK_CONFIGS as readonly CheckConfig[]) {
      if (check.isOn(config) && !listed.has(check.name)) {
        problems.push(`policy.checks = ${show(config.policy.checks)}: ${check.onWhen}, so list "${check.name}" too (or turn it off)`);
      }
    }
  }
  problems.push(...routeProblems(config, invalid));
  return problems;
}
