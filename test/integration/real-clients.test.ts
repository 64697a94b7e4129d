// Real SMTP clients (swaks, Python smtplib, Postfix smtp-source) against the real `portcullis
// serve` process with two workers sharing the listener; then the spool as the CLI shows it, a
// restart on the same spool, and a relay refusal. Traffic goes to 127.0.0.1 only.
// Needs swaks, python3, smtp-source and openssl (scripts/test-deps.sh installs them).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { scanSpool } from '../../src/spool/reader.ts';
import type { Envelope } from '../../src/spool/types.ts';
import { runCli, startCliServer, type CliServer } from '../helpers/cli-server.ts';
import { testCerts } from '../helpers/server.ts';
import { withoutReceived } from '../helpers/transcript.ts';

const TOOL_TIMEOUT_S = 20;
const QUEUED = /250 2\.0\.0 Ok: queued as ([A-Za-z0-9]+)/;

type RunResult = { code: number | null; signal: NodeJS.Signals | null; output: string };

/** Runs a client tool under `timeout`, stdin closed; stdout and stderr together (never throws on exit status). */
function runTool(cmd: string, args: string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('timeout', [String(TOOL_TIMEOUT_S), cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` },
    });
    let output = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, output }));
  });
}

function swaks(port: number, extra: string[]): Promise<RunResult> {
  return runTool('swaks', ['--server', '127.0.0.1', '--port', String(port), '--from', 'a@client.example', ...extra]);
}

function queuedId(r: RunResult, what: string): string {
  assert.equal(r.code, 0, `${what}: exit status ${r.code}; output:\n${r.output}`);
  const m = QUEUED.exec(r.output);
  assert.ok(m, `${what}: no "250 2.0.0 Ok: queued as" in the output:\n${r.output}`);
  return m[1];
}

async function spoolEnvelopes(spoolDir: string): Promise<Map<string, Envelope>> {
  const out = new Map<string, Envelope>();
  for await (const { envelope } of scanSpool(spoolDir)) {
    assert.ok(!out.has(envelope.queueId), `${envelope.queueId} listed twice`);
    out.set(envelope.queueId, envelope);
  }
  return out;
}

/** `portcullis spool list` as a map queue id -> line. */
async function cliSpoolList(configPath: string): Promise<Map<string, string>> {
  const r = await runCli(configPath, ['spool', 'list']);
  assert.equal(r.code, 0, `spool list failed: ${r.stderr}`);
  const out = new Map<string, string>();
  for (const line of r.stdout.toString('utf8').split('\n')) {
    if (line === '') continue;
    const id = line.split(' ')[0];
    assert.ok(!out.has(id), `spool list shows ${id} twice`);
    out.set(id, line);
  }
  return out;
}

async function cliSpoolShow(configPath: string, queueId: string): Promise<Buffer> {
  const r = await runCli(configPath, ['spool', 'show', queueId]);
  assert.equal(r.code, 0, `spool show ${queueId} failed: ${r.stderr}`);
  return r.stdout;
}

/** Canonical text: CRLF line endings only, no bare CR or LF, ends with CRLF. */
function assertCanonical(content: Buffer, what: string): void {
  assert.ok(content.length >= 2, `${what}: empty`);
  for (let i = 0; i < content.length; i++) {
    if (content[i] === 0x0a) assert.equal(content[i - 1], 0x0d, `${what}: bare LF at offset ${i}`);
    if (content[i] === 0x0d) assert.equal(content[i + 1], 0x0a, `${what}: bare CR at offset ${i}`);
  }
  assert.equal(content.subarray(-2).toString('latin1'), '\r\n', `${what}: does not end in CRLF`);
}

/** Our Received: header first (with its folded lines), naming the queue id. */
function assertOurReceived(text: string, queueId: string, what: string): void {
  assert.ok(text.startsWith('Received: '), `${what}: does not start with Received:\n${text.slice(0, 200)}`);
  const m = /^Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*/.exec(text);
  assert.ok(m);
  const field = m[0].replace(/\r\n[ \t]/g, ' ');
  assert.match(field, /by mx\.example\.test \(Portcullis\)/, `${what}: Received names our host`);
  assert.ok(field.includes(` id ${queueId}`), `${what}: Received lacks "id ${queueId}": ${field}`);
}

const PYTHON_CLIENT = String.raw`
import smtplib, ssl, sys
port = int(sys.argv[1])
msg = sys.stdin.buffer.read()
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', port, local_hostname='py.client.example', timeout=15)
s.set_debuglevel(1)
s.ehlo()
if not s.has_extn('starttls'):
    sys.exit('no STARTTLS advertised')
s.starttls(context=ctx)
s.ehlo()
if not s.has_extn('8bitmime'):
    sys.exit('no 8BITMIME advertised after STARTTLS')
print('TLS', s.sock.version(), flush=True)
refused = s.sendmail('py@client.example', ['alice@example.test'], msg, mail_options=['BODY=8BITMIME'])
print('REFUSED', refused, flush=True)
s.quit()
`;

/** The python message: a line beginning with "." (smtplib stuffs it) and an 8-bit UTF-8 body. */
const PYTHON_MESSAGE = Buffer.from(
  'From: py@client.example\r\nTo: alice@example.test\r\nSubject: python 8bit\r\n' +
    'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
    'first line\r\n.leading dot line\r\n..two dots\r\nGrüße aus Köln, ☃ und 日本語\r\n.\r\nlast line\r\n',
  'utf8',
);

function runPython(port: number, message: Buffer): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('timeout', [String(TOOL_TIMEOUT_S), 'python3', '-c', PYTHON_CLIENT, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, output }));
    child.stdin!.end(message);
  });
}

/** PIDs of the cluster workers as the log names them ({"pid":N,"worker":K,...}). */
function workerPids(logText: string): number[] {
  const pids = new Set<number>();
  for (const line of logText.split('\n')) {
    const m = /^\{"level":\d+,"time":\d+,"pid":(\d+),"worker":\d+/.exec(line);
    if (m) pids.add(Number(m[1]));
  }
  return [...pids];
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0); // signal 0: existence check only, sends nothing
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

describe('real clients against `portcullis serve` with 2 workers', () => {
  let server: CliServer;
  const ids = { plain: '', pipeline: '', tls: '', python: '' };
  const smtpSourceIds: string[] = [];
  let plainShown: Buffer | null = null;

  before(async () => {
    server = await startCliServer({ workers: 2 });
  });
  after(async () => {
    await server?.cleanup();
  });

  test('swaks plain is queued', { timeout: 30_000 }, async () => {
    const before = await spoolEnvelopes(server.spoolDir);
    const r = await swaks(server.port, ['--to', 'alice@example.test', '--header', 'Subject: swaks plain', '--body', 'hello']);
    ids.plain = queuedId(r, 'swaks plain');
    const after = await spoolEnvelopes(server.spoolDir);
    assert.equal(after.size, before.size + 1);
    const env = after.get(ids.plain);
    assert.ok(env, `${ids.plain} in the spool`);
    assert.equal(env.reversePath, 'a@client.example');
    assert.deepEqual(env.recipients.map((r) => r.address), ['alice@example.test']);
    assert.equal(env.client.address, '127.0.0.1');
  });

  test('swaks --pipeline is queued', { timeout: 30_000 }, async () => {
    const r = await swaks(server.port, ['--pipeline', '--to', 'alice@example.test', '--header', 'Subject: swaks pipeline', '--body', 'pipelined']);
    ids.pipeline = queuedId(r, 'swaks --pipeline');
    // swaks sends MAIL, RCPT and DATA in one batch (only when the server advertises PIPELINING),
    // then reads the three replies.
    assert.match(r.output, /\n -> MAIL FROM:<a@client\.example>\n -> RCPT TO:<alice@example\.test>\n -> DATA\n<-  250 2\.1\.0 [^\n]*\n<-  250 2\.1\.5 [^\n]*\n<-  354 /, r.output);
    const env = (await spoolEnvelopes(server.spoolDir)).get(ids.pipeline);
    assert.ok(env, `${ids.pipeline} in the spool`);
  });

  test('swaks --tls (STARTTLS, certificate verified against the test CA) is queued', { timeout: 30_000 }, async () => {
    const { certFile } = testCerts();
    const r = await swaks(server.port, ['--tls', '--tls-verify', '--tls-ca-path', certFile, '--to', 'alice@example.test', '--header', 'Subject: swaks tls', '--body', 'over tls']);
    ids.tls = queuedId(r, 'swaks --tls');
    assert.match(r.output, /TLS started with cipher/, r.output);
    const env = (await spoolEnvelopes(server.spoolDir)).get(ids.tls);
    assert.ok(env, `${ids.tls} in the spool`);
    assert.equal(env.client.isTls, true, 'envelope records the TLS session');
  });

  test('python smtplib: STARTTLS, BODY=8BITMIME, a leading-dot line', { timeout: 30_000 }, async () => {
    const r = await runPython(server.port, PYTHON_MESSAGE);
    assert.equal(r.code, 0, `python exit ${r.code}:\n${r.output}`);
    assert.match(r.output, /^TLS TLSv1\.[23]$/m, r.output);
    // stdout and smtplib's debug lines (stderr) share one pipe: the result may follow a debug line.
    assert.match(r.output, /REFUSED \{\}$/m, r.output);
    const m = /queued as ([A-Za-z0-9]+)/.exec(r.output);
    assert.ok(m, `no queue id in the smtplib debug output:\n${r.output}`);
    ids.python = m[1];
    const env = (await spoolEnvelopes(server.spoolDir)).get(ids.python);
    assert.ok(env, `${ids.python} in the spool`);
    assert.equal(env.body, '8BITMIME');
    assert.equal(env.client.isTls, true);
    assert.equal(env.reversePath, 'py@client.example');
  });

  for (const variant of [{ name: 'one message per connection', flags: [] as string[] }, { name: '-d: many messages per connection', flags: ['-d'] }]) {
    test(`smtp-source -s 5 -m 50 (${variant.name}) stores exactly 50`, { timeout: 40_000 }, async () => {
      const before = await spoolEnvelopes(server.spoolDir);
      const r = await runTool('smtp-source', [...variant.flags, '-s', '5', '-m', '50', '-l', '1024', '-f', 'a@client.example', '-t', 'alice@example.test', `127.0.0.1:${server.port}`]);
      assert.equal(r.code, 0, `smtp-source exit ${r.code} ${r.signal}:\n${r.output}`);
      const after = await spoolEnvelopes(server.spoolDir);
      const added = [...after.keys()].filter((id) => !before.has(id));
      assert.equal(added.length, 50, `spool gained ${added.length}, not 50`);
      for (const id of added) {
        const env = after.get(id)!;
        assert.equal(env.reversePath, 'a@client.example');
        assert.deepEqual(env.recipients.map((x) => x.address), ['alice@example.test']);
        assert.ok(env.size > 1024, `${id}: size ${env.size} holds the 1024-octet body`);
      }
      smtpSourceIds.push(...added);
      const sessions = new Set(added.map((id) => after.get(id)!.sessionId));
      if (variant.flags.includes('-d')) {
        // Many per connection: 50 messages in at most 5 sessions.
        assert.ok(sessions.size <= 5, `-d used ${sessions.size} sessions`);
      } else {
        assert.equal(sessions.size, 50, 'one session per message');
      }
    });
  }

  test('spool list shows every message; spool show prints canonical text', { timeout: 30_000 }, async () => {
    for (const [k, v] of Object.entries(ids)) assert.notEqual(v, '', `earlier test did not queue the ${k} message`);
    assert.equal(smtpSourceIds.length, 100, 'earlier smtp-source tests queued 100');
    const listed = await cliSpoolList(server.configPath);
    const all = [...Object.values(ids), ...smtpSourceIds];
    assert.equal(new Set(all).size, 104, 'queue ids are unique');
    for (const id of all) assert.ok(listed.has(id), `spool list lacks ${id}`);
    assert.equal(listed.size, 104, `spool list shows ${listed.size} messages`);
    assert.match(listed.get(ids.plain)!, /^\S+ \S+ <a@client\.example> <alice@example\.test> \d+$/);

    const plain = await cliSpoolShow(server.configPath, ids.plain);
    assertCanonical(plain, 'swaks plain');
    const text = plain.toString('utf8');
    assertOurReceived(text, ids.plain, 'swaks plain');
    assert.ok(text.includes('\r\nSubject: swaks plain\r\n'), 'Subject: swaks plain');
    assert.match(text, /\r\n\r\nhello\r\n/, 'body');
    plainShown = plain;

    const py = await cliSpoolShow(server.configPath, ids.python);
    assertCanonical(py, 'python');
    assertOurReceived(py.toString('utf8'), ids.python, 'python');
    const stored = Buffer.from(withoutReceived(py.toString('latin1')), 'latin1');
    // Dot-unstuffed exactly once: ".leading dot line" as written, not "..leading" nor dropped.
    assert.ok(stored.equals(PYTHON_MESSAGE), `python message stored differently:\n${JSON.stringify(stored.toString('utf8'))}`);
    assert.equal(stored.toString('utf8').split('\r\n.leading dot line\r\n').length, 2);
  });

  test('after SIGTERM and a restart the spool is unchanged and the server serves', { timeout: 60_000 }, async () => {
    assert.ok(plainShown, 'the spool show test ran');
    const workers = workerPids(server.logText());
    assert.equal(workers.length, 2, `two workers logged: ${workers.join(',')}`);
    const oldPid = server.pid;
    const exit = await server.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, 'graceful stop exits 0');
    assert.equal(isAlive(oldPid), false, 'primary gone');
    for (const pid of workers) {
      const deadline = Date.now() + 5_000;
      while (isAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.equal(isAlive(pid), false, `worker ${pid} gone after the primary stopped`);
    }
    assert.match(server.logText(), /"msg":"all workers stopped"/);

    server = await server.restart();
    assert.notEqual(server.pid, oldPid);
    // A message sent with swaks sits in the spool as canonical text after a restart.
    const again = await cliSpoolShow(server.configPath, ids.plain);
    assert.ok(again.equals(plainShown), 'spool show of the swaks message changed across the restart');

    const r = await swaks(server.port, ['--to', 'alice@example.test', '--header', 'Subject: after restart', '--body', 'again']);
    const newId = queuedId(r, 'swaks after restart');
    const listed = await cliSpoolList(server.configPath);
    assert.equal(listed.size, 105);
    for (const id of [...Object.values(ids), ...smtpSourceIds, newId]) assert.ok(listed.has(id), `spool list lacks ${id} after restart`);
    // Nothing the clients did, nor the stop and restart, made the server log an error.
    const errors = server.logText().split('\n').filter((l) => /^\{"level":(?:50|60),/.test(l));
    assert.deepEqual(errors, [], 'error lines in the server log');
  });
});

test('relay refused to a real client: swaks to another domain gets 554 5.7.1', { timeout: 60_000 }, async () => {
  const server = await startCliServer({ workers: 2, relayNetworks: [] });
  try {
    const r = await swaks(server.port, ['--to', 'user@elsewhere.example', '--header', 'Subject: relay', '--body', 'no']);
    assert.notEqual(r.code, 0, `swaks should fail; output:\n${r.output}`);
    assert.match(r.output, /<\*\* +554 5\.7\.1 Relay access denied/, r.output);
    assert.doesNotMatch(r.output, QUEUED);
    // The local domain still works from the same client.
    const ok = await swaks(server.port, ['--to', 'alice@example.test', '--body', 'local']);
    const id = queuedId(ok, 'swaks local with relay off');
    const listed = await cliSpoolList(server.configPath);
    assert.deepEqual([...listed.keys()], [id], 'only the local message is stored');
  } finally {
    await server.cleanup();
  }
});
