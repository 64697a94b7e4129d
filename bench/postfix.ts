// Starts the Debian postfix package's master as a benchmark peer, from a private configuration
// directory in the scratch dir (`postfix -c DIR start`): /etc/postfix is never read or edited.
// Mail for bench.test from loopback is accepted, queued durably (cleanup fsyncs the queue file
// before smtpd answers 250) and then thrown away by the discard transport. Needs root.

import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isRunning } from './proc.ts';
import type { RunningServer, StartOptions } from './servers.ts';
import { findExecutable, HOST, lastLines, runCommand, stopTree, waitForBanner, waitForExit } from './util.ts';

function postfixUid(): number {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((entry) => entry.startsWith('postfix:'));
  if (line === undefined) throw new Error('there is no postfix user (is the postfix package installed?)');
  return Number(line.split(':')[2]);
}

function mainCf(dir: string, port: number, debug: boolean, extra: readonly string[] = []): string {
  const lines = [
    'compatibility_level = 3.6',
    `queue_directory = ${dir}/queue`,
    `data_directory = ${dir}/data`,
    'myhostname = bench.local',
    'mydomain = bench.local',
    'mydestination =',
    `inet_interfaces = ${HOST}`,
    'inet_protocols = ipv4',
    'mynetworks = 127.0.0.0/8',
    'relay_domains = bench.test',
    'smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination',
    'default_transport = discard:bench',
    'relay_transport = discard:bench',
    'local_transport = discard:bench',
    'default_process_limit = 200',
    'alias_maps =',
    'alias_database =',
    'biff = no',
    `# smtpd listens on ${HOST}:${port} (master.cf)`,
    ...extra,
  ];
  // There is no syslog socket here, so Postfix logs nothing unless told to write a file; postlogd
  // would cost throughput, so only --debug turns it on.
  if (debug) lines.push(`maillog_file_prefixes = ${dir}`, `maillog_file = ${dir}/maillog`);
  return `${lines.join('\n')}\n`;
}

// Debian's master.cf services, none chrooted, without the port 25 listener.
// With `postscreen`, the listener is postscreen (Postfix's connection-level defense: one process
// holds every connection until it passes, then hands it to an smtpd), as a defended edge runs it.
function masterCf(port: number, postscreen = false): string {
  const listener = postscreen
    ? `${HOST}:${port} inet n - n - 1 postscreen
smtpd      pass  - - n -    - smtpd
dnsblog    unix  - - n -    0 dnsblog
tlsproxy   unix  - - n -    0 tlsproxy
`
    : `${HOST}:${port} inet n - n - - smtpd
`;
  return `${listener}pickup     unix  n - n 60   1 pickup
cleanup    unix  n - n -    0 cleanup
qmgr       unix  n - n 300  1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -    - trivial-rewrite
bounce     unix  - - n -    0 bounce
defer      unix  - - n -    0 bounce
trace      unix  - - n -    0 bounce
verify     unix  - - n -    1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -    - proxymap
proxywrite unix  - - n -    1 proxymap
smtp       unix  - - n -    - smtp
relay      unix  - - n -    - smtp
showq      unix  n - n -    - showq
error      unix  - - n -    - error
retry      unix  - - n -    - error
discard    unix  - - n -    - discard
local      unix  - n n -    - local
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
`;
}

export async function startPostfix(options: StartOptions): Promise<RunningServer> {
  if (process.getuid?.() !== 0) throw new Error('the Postfix peer needs root (its master runs as root)');
  const postfix = findExecutable('postfix');
  const postconf = findExecutable('postconf');
  if (postfix === undefined || postconf === undefined) throw new Error('postfix is not installed (apt-get install postfix)');
  const dir = join(options.scratchDir, 'postfix');
  const etc = join(dir, 'etc');
  mkdirSync(etc, { recursive: true });
  mkdirSync(join(dir, 'queue'));
  mkdirSync(join(dir, 'data'));
  // Postfix's daemons run as the postfix user: they must reach the queue and own data_directory.
  chmodSync(dir, 0o755);
  chownSync(join(dir, 'data'), postfixUid(), -1);
  writeFileSync(join(etc, 'main.cf'), mainCf(dir, options.port, options.debug, options.postfixMainCf));
  writeFileSync(join(etc, 'master.cf'), masterCf(options.port, options.postscreen === true));

  const version = (await runCommand(postconf, ['-c', etc, '-h', 'mail_version'], { timeoutMs: 10_000 })).stdout.trim();
  const started = await runCommand(postfix, ['-c', etc, 'start'], { timeoutMs: 60_000 });
  const pidFile = join(dir, 'queue/pid/master.pid');
  let masterPid = 0;
  try {
    masterPid = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    // no master: reported below
  }
  const stop = async () => {
    await runCommand(postfix, ['-c', etc, 'stop'], { timeoutMs: 30_000 });
    if (masterPid > 0 && !(await waitForExit(masterPid, 15_000))) await stopTree(masterPid);
  };
  const failure = () => (masterPid > 0 && isRunning(masterPid) ? undefined : 'the Postfix master is not running');
  try {
    if (started.code !== 0) {
      const hint = options.debug ? lastLines(join(dir, 'maillog'), 5) : ' (rerun with --debug to get its log)';
      throw new Error(`postfix start exited with ${started.code ?? 'a timeout'}${hint}`);
    }
    await waitForBanner(options.port, 30_000, failure);
  } catch (error) {
    await stop();
    throw error;
  }
  return { rootPid: masterPid, version: `${version} (apt package)`, failure, stop };
}
