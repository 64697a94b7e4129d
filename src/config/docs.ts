// The documentation block of each configuration key, generated from the key tables: the test
// checks docs/configuration.md holds each one verbatim, and `node scripts/config-docs.ts`
// rewrites the blocks in place after a key's text or default changes. Pure string work.

import type { ConfigKey, ListKey } from './keys.ts';

export function renderKeyDoc(key: ConfigKey): string {
  return [
    `### \`${key.path}\``,
    '',
    `- Type: ${key.type}`,
    `- Default: \`${key.defaultToml}\``,
    `- Allowed: ${key.allowed}`,
    `- In Config: \`${key.configPath}\``,
    '',
    key.doc,
  ].join('\n');
}

/** The block for one key of an array of tables (`[[dnsbl]]`). */
export function renderListKeyDoc(key: ListKey): string {
  return [
    `### \`${key.path}\``,
    '',
    `- Type: ${key.type}`,
    `- Default: ${key.defaultToml === undefined ? 'none: required' : `\`${key.defaultToml}\``}`,
    `- Allowed: ${key.allowed}`,
    `- In Config: \`${key.table}[i].${key.field}\``,
    '',
    key.doc,
  ].join('\n');
}
