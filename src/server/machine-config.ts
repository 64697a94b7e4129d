// Builds the session machine's view of the configuration from the validated Config.
// Lives in the shell because the protocol core must not import config.

import type { Config } from '../config/types.ts';
import type { BodyBudget } from '../protocol/body-budget.ts';
import type { MachineConfig } from '../protocol/machine-config.ts';
import type { PolicyStage } from '../protocol/session.ts';

/** Issue 5's default: after 3 policy refusals in one session, 421 4.7.0. */
export const DEFAULT_MAX_POLICY_REFUSALS = 3;

export function machineConfigFrom(
  cfg: Config,
  opts: { isTlsAvailable: boolean; policyStages?: ReadonlySet<PolicyStage>; maxPolicyRefusals?: number; hasTransform?: boolean; logCommands?: boolean; isRoutable?: (address: string) => boolean; bodyBudget?: BodyBudget },
): MachineConfig {
  const s = cfg.smtp;
  return {
    hostname: s.hostname,
    maxMessageBytes: s.maxMessageBytes,
    maxCommandLineBytes: s.maxCommandLineBytes,
    maxTextLineBytes: s.maxTextLineBytes,
    maxRecipients: s.maxRecipients,
    maxErrors: s.maxErrors,
    maxTransactions: s.maxTransactions,
    allowEmptyHelo: s.allowEmptyHelo,
    vrfy: s.vrfy,
    expn: s.expn,
    isNormalizingBareLineEndings: s.bareLineEndings === 'normalize',
    localDomains: new Set(cfg.domains.local.map((d) => d.toLowerCase())),
    isTlsAvailable: opts.isTlsAvailable,
    maxPolicyRefusals: opts.maxPolicyRefusals ?? DEFAULT_MAX_POLICY_REFUSALS,
    policyStages: opts.policyStages ?? new Set(),
    hasTransform: opts.hasTransform ?? false,
    logCommands: opts.logCommands ?? true,
    bodyMemoryBytes: s.bodyMemoryBytes,
    limits: {
      commandTimeoutMs: s.commandTimeoutSeconds * 1000,
      dataTimeoutMs: s.dataTimeoutSeconds * 1000,
      commandDeadlineMs: cfg.limits.commandDeadlineSeconds * 1000,
      minDataRateBytes: cfg.limits.minDataRateBytes,
      minDataRateWindowMs: cfg.limits.minDataRateWindowSeconds * 1000,
      sessionMaxMs: cfg.limits.sessionMaxSeconds * 1000,
      stressTimeoutMs: cfg.limits.stressTimeoutSeconds * 1000,
    },
    maxIdleCommands: cfg.limits.maxIdleCommands,
    refusedSession: { maxMs: cfg.limits.refusedSessionSeconds * 1000, maxCommands: cfg.limits.refusedSessionCommands },
    tarpit: { freeErrors: cfg.tarpit.freeErrors, initialDelayMs: cfg.tarpit.initialDelayMs, maxDelayMs: cfg.tarpit.maxDelaySeconds * 1000 },
    ...(opts.isRoutable !== undefined ? { isRoutable: opts.isRoutable } : {}),
    ...(opts.bodyBudget !== undefined ? { bodyBudget: opts.bodyBudget } : {}),
  };
}
