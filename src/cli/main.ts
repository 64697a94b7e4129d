// The `portcullis` command: serve, check-config, spool inspection, help.
// Never holds server logic: it parses arguments, loads the config and calls into server/ and spool/.

import { ConfigError, loadConfig } from '../config/load.ts';
import type { Config } from '../config/types.ts';
import { readMessage, scanSpool } from '../spool/reader.ts';
import { ControlError, sendControl } from '../server/control.ts';
import { serve } from '../server/supervisor.ts';

const HELP = `portcullis - a security-hardened SMTP mail transfer agent

Usage:
  portcullis serve [--config FILE]          run the SMTP server (no FILE: the embedded default,
                                            127.0.0.1:2525, spool under ./var/spool)
  portcullis stop [--config FILE]           stop the server serving this config's spool gracefully
                                            (as SIGTERM: messages in the middle of their data finish)
  portcullis queue list [--config FILE]     the running server's queue, mailq-like: id, size, arrival,
                                            sender, each recipient's state, next attempt, last reply
  portcullis queue show ID                  one message's queue state (JSON)
  portcullis queue flush [ID|DOMAIN]        try deferred mail now (one message, one domain, or all)
  portcullis queue delete|hold|release|bounce ID
                                            remove; hold back; deliver again; return to sender (DSN)
  portcullis queue shape                    messages per destination by age (qshape-like)
  portcullis verdicts list [NETWORK|ADDRESS]
                                            what verdict memory remembers (check, stage, reply,
                                            since, until), for every client or those in NETWORK
  portcullis verdicts forget NETWORK|ADDRESS
                                            lift remembered refusals now (every node sharing the
                                            state store; safe while the server runs)
  portcullis check-config [--config FILE]   validate the configuration; exit 1 listing each problem
  portcullis spool list [--config FILE]     one line per stored message: queue id, time, sender, recipients
  portcullis spool show QUEUEID [--config FILE]
                                            print a stored message's canonical content
  portcullis --help                         this text
  portcullis --version                      the version

Configuration keys: docs/configuration.md. Delivery and the queue: docs/delivery.md. Verdict memory: docs/policy.md. Spool format: docs/spool.md.
Connection defense: docs/defense.md. Content filters: docs/filters.md.
`;

/**
 * A reader that closes our output early (`portcullis spool list | head -1`) has what it wanted:
 * end quietly, as Unix tools do, instead of dying on an unhandled EPIPE with a stack trace. Node
 * ignores SIGPIPE, so the closed pipe shows up as an 'error' on the stream; the status is the
 * command's own (0 unless it had already failed), not SIGPIPE's 141, so `set -o pipefail` scripts
 * that take the head of a listing keep working. Any other output error is still ours to report.
 */
function endQuietlyWhenOutputCloses(stream: NodeJS.WriteStream): void {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
  });
}
endQuietlyWhenOutputCloses(process.stdout);
endQuietlyWhenOutputCloses(process.stderr);

function die(msg: string, code = 2): never {
  process.stderr.write(`portcullis: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv: string[]): { positional: string[]; configPath: string | undefined } {
  const positional: string[] = [];
  let configPath: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--config' || a === '-c') {
      configPath = argv[++i];
      if (configPath === undefined) die('--config needs a file name');
    } else if (a.startsWith('--config=')) {
      configPath = a.slice(9);
    } else if (a.startsWith('-') && a !== '-') {
      die(`unknown option ${a} (see portcullis --help)`);
    } else {
      positional.push(a);
    }
  }
  return { positional, configPath };
}

function load(configPath: string | undefined): Config {
  try {
    return loadConfig(configPath);
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) process.stderr.write(`${err.source}: ${p}\n`);
      process.exit(1);
    }
    throw err;
  }
}

/** Asks the running server to stop and waits until it has (its control socket stops answering). */
async function stopServer(cfg: Config): Promise<void> {
  let pid: number;
  try {
    ({ pid } = (await sendControl(cfg.spool.dir, { op: 'stop' }, 10_000)) as { pid: number });
  } catch (err) {
    if (err instanceof ControlError) die(err.message === 'not running' ? `no server is running on the spool ${cfg.spool.dir}` : err.message, 1);
    throw err;
  }
  const deadline = Date.now() + (cfg.smtp.stopGraceSeconds + 10) * 1000;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    try {
      await sendControl(cfg.spool.dir, { op: 'ping' }, 2_000);
    } catch {
      process.stdout.write(`stopped (pid ${pid})\n`);
      return;
    }
  }
  die(`the server (pid ${pid}) is still running after ${cfg.smtp.stopGraceSeconds + 10} s`, 1);
}

async function main(argv: string[]): Promise<void> {
  if (argv.length === 0 || argv.includes('--help') || argv.includes('-h') || argv[0] === 'help') {
    process.stdout.write(HELP);
    return;
  }
  if (argv.includes('--version')) {
    const pkg = (await import('../../package.json', { with: { type: 'json' } })).default as { version: string };
    process.stdout.write(`portcullis ${pkg.version}\n`);
    return;
  }
  const { positional, configPath } = parseArgs(argv);
  const [command, ...rest] = positional;
  switch (command) {
    case 'serve':
      if (rest.length > 0) die(`serve takes no arguments (got ${rest.join(' ')})`);
      await serve(load(configPath));
      return;
    case 'stop': {
      if (rest.length > 0) die(`stop takes no arguments (got ${rest.join(' ')})`);
      await stopServer(load(configPath));
      return;
    }
    case 'queue': {
      const { queueCommand } = await import('./queue.ts');
      process.exitCode = await queueCommand(load(configPath).spool.dir, rest, (t) => process.stdout.write(t), (t) => process.stderr.write(`portcullis: ${t}\n`));
      return;
    }
    case 'verdicts': {
      const { verdictsCommand } = await import('./verdicts.ts');
      process.exitCode = await verdictsCommand(load(configPath), rest, (t) => process.stdout.write(t), (t) => process.stderr.write(`portcullis: ${t}\n`));
      return;
    }
    case 'check-config':
      load(configPath);
      process.stdout.write(`configuration OK${configPath === undefined ? ' (embedded default)' : ''}\n`);
      return;
    case 'spool': {
      const cfg = load(configPath);
      if (rest[0] === 'list') {
        for await (const { envelope: e } of scanSpool(cfg.spool.dir)) {
          process.stdout.write(`${e.queueId} ${e.receivedAt} <${e.reversePath}> ${e.recipients.map((r) => `<${r.address}>`).join(' ')} ${e.size}\n`);
        }
        return;
      }
      if (rest[0] === 'show' && rest[1] !== undefined) {
        const m = await readMessage(cfg.spool.dir, rest[1]);
        if (m === null) die(`no message ${rest[1]} in ${cfg.spool.dir}`, 1);
        process.stdout.write(m.content);
        return;
      }
      die('usage: portcullis spool list | portcullis spool show QUEUEID');
      break;
    }
    default:
      die(`unknown command ${command ?? ''} (see portcullis --help)`);
  }
}

await main(process.argv.slice(2));
