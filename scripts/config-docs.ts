// Rewrites every key's generated block in docs/configuration.md from the key tables (a block runs
// from its "### `path`" line to the next heading). A key missing from the file is reported, not
// added: place its heading by hand in the right section, then run this again.
//
//   npx node scripts/config-docs.ts

import { readFileSync, writeFileSync } from 'node:fs';
import { renderKeyDoc, renderListKeyDoc } from '../src/config/docs.ts';
import { CONFIG_KEYS, TABLE_KEYS } from '../src/config/load.ts';

const file = new URL('../docs/configuration.md', import.meta.url);
let text = readFileSync(file, 'utf8');
const blocks: [string, string][] = [
  ...CONFIG_KEYS.map((key): [string, string] => [key.path, renderKeyDoc(key)]),
  ...TABLE_KEYS.map((key): [string, string] => [key.path, renderListKeyDoc(key)]),
];
let missing = 0;
for (const [path, block] of blocks) {
  const heading = `### \`${path}\`\n`;
  const start = text.indexOf(heading);
  if (start < 0) {
    process.stderr.write(`docs/configuration.md has no "### \`${path}\`" heading: add one in its section\n`);
    missing++;
    continue;
  }
  const next = /\n#{2,3} /.exec(text.slice(start + heading.length));
  const end = next === null ? text.length : start + heading.length + next.index;
  text = `${text.slice(0, start)}${block}\n${text.slice(end)}`;
}
writeFileSync(file, text);
process.exitCode = missing === 0 ? 0 : 1;
