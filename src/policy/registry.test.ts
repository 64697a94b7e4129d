// The check registry: every registered check brings its keys, documented; its sections are its
// own; it is off in the embedded default; and the configuration knows it by name.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { renderKeyDoc, renderListKeyDoc } from '../config/docs.ts';
import type { CheckConfig } from '../config/keys.ts';
import { CONFIG_KEYS, TABLE_KEYS, parseConfig } from '../config/load.ts';
import { defaultConfig } from '../config/types.ts';
import { CHECK_CONFIGS, POLICY_CHECK_NAMES } from './registry.ts';

const DOCS = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
const CHECKS = CHECK_CONFIGS as readonly CheckConfig[];

test('each registered check\'s keys are documented in docs/configuration.md, verbatim', () => {
  for (const check of CHECKS) {
    assert.ok(check.keys.length > 0 || (check.tables?.keys.length ?? 0) > 0, `${check.name} has keys`);
    for (const key of check.keys) assert.ok(DOCS.includes(renderKeyDoc(key)), `${check.name}: ${key.path} is documented`);
    for (const key of check.tables?.keys ?? []) assert.ok(DOCS.includes(renderListKeyDoc(key)), `${check.name}: ${key.path} is documented`);
  }
});

test('each check owns its sections: its keys live in them, and no two checks share one', () => {
  const owner = new Map<string, string>();
  for (const check of CHECKS) {
    const sections = Object.keys(check.defaults);
    for (const section of sections) {
      assert.equal(owner.get(section), undefined, `${section} is claimed by ${owner.get(section)} and ${check.name}`);
      owner.set(section, check.name);
    }
    for (const key of check.keys) assert.ok(sections.includes(key.section), `${check.name}: ${key.path} is in its own sections`);
    if (check.tables !== undefined) assert.ok(sections.includes(check.tables.name), `${check.name}: [[${check.tables.name}]] is its own`);
  }
  // The core sections are nobody's.
  for (const key of CONFIG_KEYS) if (!owner.has(key.section)) assert.ok(!CHECKS.some((c) => c.keys.includes(key)));
});

test('the configuration is built from the registry: names, order, keys, defaults, tables, cross-checks', () => {
  assert.deepEqual(POLICY_CHECK_NAMES, CHECKS.map((c) => c.name));
  const config = defaultConfig();
  assert.deepEqual(config.policy.checks, POLICY_CHECK_NAMES);
  for (const check of CHECKS) {
    for (const key of check.keys) assert.ok(CONFIG_KEYS.includes(key), `${key.path} is a configuration key`);
    for (const [section, value] of Object.entries(check.defaults)) {
      assert.deepEqual((config as unknown as Record<string, unknown>)[section], value, `${section} defaults`);
    }
    // Off in the embedded default: `npm start` runs no check it was not asked for.
    assert.equal(check.isOn(config), false, `${check.name} is off by default`);
  }
  assert.deepEqual(TABLE_KEYS.filter((k) => k.table !== 'listener'), CHECKS.flatMap((c) => c.tables?.keys ?? []));
  // Paths are pinned to the working directory on load, a check's (recipients.table) as the core's.
  assert.deepEqual(CONFIG_KEYS.filter((k) => k.isPath).map((k) => k.path).sort(), ['access.block_file', 'recipients.table', 'spool.dir', 'tls.cert', 'tls.key']);
  // A check switched on in its own section but left out of policy.checks is refused, by name.
  assert.throws(() => parseConfig('[policy]\nchecks = []\n[helo]\nrequire_fqdn = true\n', 'p.toml'), /a helo option is on, so list "helo" too/);
});

test('defaultConfig() hands out fresh check sections', () => {
  const a = defaultConfig();
  a.dnsbl.push({ zone: 'x.example', weight: 1, answers: [] });
  a.spf.enabled = true;
  const b = defaultConfig();
  assert.deepEqual(b.dnsbl, []);
  assert.equal(b.spf.enabled, false);
});

test('loading the configuration loads no check code: only the checks\' configuration parts', () => {
  const seen = new Set<string>();
  const visit = (url: URL): void => {
    if (seen.has(url.href)) return;
    seen.add(url.href);
    const text = readFileSync(url, 'utf8');
    // Value imports only: `import type` lines vanish at run time.
    for (const m of text.matchAll(/^(?:import|export) (?!type )[^;]*? from '(\.{1,2}\/[^']+\.ts)';$/gm)) visit(new URL(m[1], url));
  };
  visit(new URL('../config/load.ts', import.meta.url));
  const policyFiles = [...seen].map((href) => href.slice(href.indexOf('/src/') + 1)).filter((path) => path.startsWith('src/policy/'));
  assert.ok(policyFiles.includes('src/policy/registry.ts'));
  const allowed = /^src\/policy\/(registry\.ts|checks\/[a-z]+\/(config|pattern)\.ts)$/;
  assert.deepEqual(policyFiles.filter((path) => !allowed.test(path)), []);
});
