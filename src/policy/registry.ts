// The check registry: the one list of the policy checks, in their default order. Each entry is
// a check's configuration part (checks/<name>/config.ts: its sections, their defaults and keys,
// when they switch it on); the configuration, its docs and its cross-checks are built from this
// list, and PolicyCheckName comes from it. Each check's builder is the `build` export of
// checks/<name>/index.ts, which build.ts loads by the registered name.
//
// Adding a check: a directory checks/<name>/ (check.ts, config.ts, index.ts exporting `build`),
// one line here, and its keys' headings in docs/configuration.md (the docs test names any that
// are missing; scripts/config-docs.ts writes their blocks).
//
// Never imports check code (check.ts, index.ts): the configuration loader reads this list.

import { authenticationConfig } from './checks/authentication/config.ts';
import { batvConfig } from './checks/batv/config.ts';
import { clamdConfig } from './checks/clamd/config.ts';
import { dnsblConfig } from './checks/dnsbl/config.ts';
import { greylistConfig } from './checks/greylist/config.ts';
import { heloConfig } from './checks/helo/config.ts';
import { milterConfig } from './checks/milter/config.ts';
import { recipientsConfig } from './checks/recipients/config.ts';
import { rspamdConfig } from './checks/rspamd/config.ts';
import { spamdConfig } from './checks/spamd/config.ts';
import { spfConfig } from './checks/spf/config.ts';

export const CHECK_CONFIGS = [recipientsConfig, heloConfig, dnsblConfig, spfConfig, greylistConfig, batvConfig, clamdConfig, spamdConfig, rspamdConfig, authenticationConfig, milterConfig] as const;

export type PolicyCheckName = (typeof CHECK_CONFIGS)[number]['name'];

export const POLICY_CHECK_NAMES: readonly PolicyCheckName[] = CHECK_CONFIGS.map((c) => c.name);

type UnionToIntersection<U> = (U extends unknown ? (u: U) => void : never) extends (i: infer I) => void ? I : never;

/** Every check's sections, by section name, as Config holds them. */
export type CheckSections = UnionToIntersection<(typeof CHECK_CONFIGS)[number]['defaults']>;

/** A fresh copy of every check's embedded defaults (callers may change what they get). */
export function checkDefaults(): CheckSections {
  return structuredClone(Object.assign({}, ...CHECK_CONFIGS.map((c) => c.defaults))) as CheckSections;
}
