// [routes] and [aliases]: every route form parses, each mistake gets one precise problem (with a
// suggestion where one helps), loops and refused local domains are caught at load.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, parseConfig } from '../load.ts';
import { defaultConfig } from '../types.ts';
import { formatRoute, parseRoute } from './routes.ts';

function problems(toml: string): string[] {
  try {
    parseConfig(toml, 't.toml');
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

test('the embedded default: nothing relayed, local domains to Maildirs under var/', () => {
  assert.deepEqual(defaultConfig().routes, { default: { kind: 'refuse' }, local: { kind: 'maildir', path: 'var/maildir' }, domains: {} });
  assert.deepEqual(defaultConfig().aliases, {});
});

test('every route form', () => {
  const c = parseConfig(
    '[domains]\nlocal = ["example.test"]\n[routes]\ndefault = "mx"\n"Example.Test" = "lmtp:127.0.0.1:24"\n"a.example" = "smtp:[10.0.0.5]:25"\n' +
      '"b.example" = "smtp:relay.example"\n"c.example" = "lmtp:/run/lmtp"\n"d.example" = "lmtp:unix:var/lmtp"\n"e.example" = "maildir:/srv/mail"\n' +
      '"f.example" = "refuse"\n"i.example" = "discard"\n"g.example" = { via = "smtp:[2001:db8::1]:587", tls = "required" }\n"h.example" = { via = "mx", tls = "none" }\n',
    't.toml',
  );
  assert.deepEqual(c.routes.default, { kind: 'mx', tls: 'opportunistic' });
  assert.deepEqual(c.routes.domains, {
    'example.test': { kind: 'lmtp', host: '127.0.0.1', port: 24 },
    'a.example': { kind: 'smtp', host: '10.0.0.5', port: 25, tls: 'opportunistic' },
    'b.example': { kind: 'smtp', host: 'relay.example', port: 25, tls: 'opportunistic' },
    'c.example': { kind: 'lmtp', socket: '/run/lmtp' },
    'd.example': { kind: 'lmtp', socket: 'var/lmtp' },
    'e.example': { kind: 'maildir', path: '/srv/mail' },
    'f.example': { kind: 'refuse' },
    'i.example': { kind: 'discard' },
    'g.example': { kind: 'smtp', host: '2001:db8::1', port: 587, tls: 'required' },
    'h.example': { kind: 'mx', tls: 'none' },
  });
  for (const text of ['mx', 'refuse', 'discard', 'smtp:[relay.example]:587', 'lmtp:127.0.0.1:24', 'lmtp:[::1]:24', 'lmtp:/run/x', 'lmtp:unix:var/x', 'maildir:var/m']) {
    const route = parseRoute(text);
    assert.ok(typeof route !== 'string', text);
    assert.deepEqual(parseRoute(formatRoute(route)), route, text);
  }
});

test('route mistakes: one precise problem each', () => {
  const cases: [string, RegExp][] = [
    ['default = "relay:[x.example]:25"', /routes\.default = "relay:\[x\.example\]:25": is not a route: .*\(did you mean "smtp:…"\?\)/],
    ['default = "MX"', /write it in lower case: "mx"/],
    ['default = "mx:example.org"', /"mx" takes no argument.*"smtp:\[example\.org\]:25"/],
    ['default = "smtp:[relay.example:25"', /has no closing "\]"/],
    ['default = "smtp:2001:db8::1:25"', /IPv6 address goes in brackets/],
    ['default = "smtp:[relay.example]:70000"', /port "70000" must be an integer from 1 to 65535/],
    ['default = "lmtp:127.0.0.1"', /needs a port, e.g. "127.0.0.1:24"/],
    ['default = "maildir:"', /has no directory/],
    ['default = "smtp:bad_host.example"', /host "bad_host.example" is not an IP address or host name/],
    ['default = 25', /must be a string such as .*not an integer/],
    ['default = { via = "smtp:[r.example]", tls = "requried" }', /routes\.default\.tls = "requried": .*\(did you mean "required"\?\)/],
    ['default = { via = "smtp:[r.example]", tsl = "required" }', /unknown key "routes\.default\.tsl" \(did you mean "routes\.default\.tls"\?\)/],
    ['default = { tls = "required" }', /routes\.default: via must be set/],
    ['default = { via = "maildir:x", tls = "required" }', /only "mx" and "smtp:" routes use TLS/],
    ['example.com = "mx"', /routes\.example = \{ com = "mx" \}: a domain with dots must be quoted: write "example\.com" = \.\.\./],
    ['defualt = "mx"', /routes\.defualt: not a domain|did you mean "routes\.default"/],
    ['"a.example" = "mx"\n"A.Example" = "refuse"', /routes\."A\.Example": same domain as routes\."a\.example"/],
    ['"bad..example" = "mx"', /routes\."bad\.\.example": not a domain \(must not have an empty label/],
  ];
  for (const [line, expected] of cases) {
    const p = problems(`[routes]\n${line}\n`);
    assert.equal(p.length, 1, `${line}: ${JSON.stringify(p)}`);
    assert.match(p[0], expected, line);
  }
});

test('a local domain routed to "refuse" is a problem (accepted, then bounced)', () => {
  assert.match(problems('[domains]\nlocal = ["example.test"]\n[routes]\nlocal = "refuse"\n')[0], /^routes\.local = "refuse": domains\.local lists "example\.test"/);
  assert.match(problems('[domains]\nlocal = ["example.test"]\n[routes]\n"example.test" = "refuse"\n')[0], /^routes\."example\.test" = "refuse"/);
  assert.deepEqual(problems('[domains]\nlocal = []\n[routes]\nlocal = "refuse"\n'), []);
});

test('[aliases]: one address or a list, lowercased domains, loops and depth refused at load', () => {
  const c = parseConfig('[aliases]\n"Postmaster@Example.Test" = "Alice@Example.Test"\n"team@example.test" = ["alice@example.test", "bob@example.org", "Bob@EXAMPLE.org"]\n', 't.toml');
  assert.deepEqual(c.aliases, { 'postmaster@example.test': ['Alice@example.test'], 'team@example.test': ['alice@example.test', 'bob@example.org'] });
  assert.deepEqual(problems('[aliases]\n"a@x.example" = ["a@x.example", "b@x.example"]\n'), [], 'listing itself keeps a copy');
  const loop = problems('[aliases]\n"a@x.example" = "b@x.example"\n"b@x.example" = "c@x.example"\n"c@x.example" = "a@x.example"\n"in@x.example" = "b@x.example"\n');
  assert.equal(loop.length, 1, `one loop, one problem: ${JSON.stringify(loop)}`);
  assert.match(loop[0], /aliases\."a@x\.example": loops back to itself through "a@x\.example" -> "b@x\.example" -> "c@x\.example" -> "a@x\.example"/);
  const chain = Array.from({ length: 12 }, (_, i) => `"a${i}@x.example" = "a${i + 1}@x.example"`).join('\n');
  assert.match(problems(`[aliases]\n${chain}\n`)[0], /expands through more than 10 aliases/);
  assert.match(problems('[aliases]\n"in@x.example" = "a@x.example"\n"a@x.example" = "b@x.example"\n"b@x.example" = "a@x.example"\n')[0], /^aliases\."a@x\.example": loops back to itself through "a@x\.example" -> "b@x\.example" -> "a@x\.example"/, 'named where the cycle is');
  const cases: [string, RegExp][] = [
    ['"a@x.example" = []', /must be an address or a non-empty list/],
    ['"a@x.example" = "<b@x.example>"', /aliases\."a@x\.example" = "<b@x\.example>": must be an address "local@domain", without angle brackets/],
    ['"a@x.example" = ["b@x.example", 3]', /aliases\."a@x\.example"\[1\] = 3: must be an address string/],
    ['"nobody" = "b@x.example"', /aliases\."nobody": the key must be an address/],
    ['"a@bad_domain" = "b@x.example"', /aliases\."a@bad_domain": the key must be an address/],
    ['"a@x.example" = "b@x.example"\n"A@X.EXAMPLE" = "c@x.example"', /same address as aliases\."a@x\.example"/],
  ];
  for (const [line, expected] of cases) {
    const p = problems(`[aliases]\n${line}\n`);
    assert.equal(p.length, 1, `${line}: ${JSON.stringify(p)}`);
    assert.match(p[0], expected, line);
  }
});
