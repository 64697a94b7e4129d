// Builds the session machine's view of the configuration from the validated Config.
// Lives in the shell because the protocol core must not import config.

import type { Config } from '../config/types.ts';
import type { MachineConfig } from '../protocol/machine-config.ts';
import type { PolicyStage } from '../protocol/session.ts';

export function machineConfigFrom(cfg: Config, opts: { isTlsAvailable: boolean; policyStages?: ReadonlySet<PolicyStage> }): MachineConfig {
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
    policyStages: opts.policyStages ?? new Set(),
  };
}
