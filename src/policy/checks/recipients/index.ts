// The recipient table check's builder: the table from `recipients.table` and
// `recipients.addresses`, for the local domains; off when neither is set.

import type { CheckBuilder } from '../../check.ts';
import { loadRecipientTable, recipientsCheck } from './check.ts';

export const build: CheckBuilder = (cfg) => {
  const { table, addresses } = cfg.recipients;
  if (table === '' && addresses.length === 0) return null;
  const localDomains = new Set(cfg.domains.local.map((d) => d.toLowerCase()));
  // The TOML entries are already validated (and lowercased): used as they are, not re-parsed
  // as file lines ('#' is a comment in the file, a valid local-part character here).
  const fromFile = table === '' ? null : loadRecipientTable(table);
  return recipientsCheck(
    {
      addresses: new Set([...addresses.filter((a) => !a.startsWith('@')), ...(fromFile?.addresses ?? [])]),
      catchAllDomains: new Set([...addresses.filter((a) => a.startsWith('@')).map((a) => a.slice(1)), ...(fromFile?.catchAllDomains ?? [])]),
    },
    localDomains,
  );
};
