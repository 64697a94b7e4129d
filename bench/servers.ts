// The servers the benchmark loads: Portcullis and its two same-run peers, Postfix and Haraka.
// Owns the common shape of a started server and the port each listens on; each starter lives in
// its own file. A starter either returns a server that answered 220 or throws with the reason.

import { startHaraka } from './haraka.ts';
import { startPortcullis } from './portcullis.ts';
import { startPostfix } from './postfix.ts';
import { waitForFreePort } from './util.ts';

export const SERVER_NAMES = ['portcullis', 'postfix', 'haraka'] as const;
export type ServerName = (typeof SERVER_NAMES)[number];

export const DISPLAY_NAMES: Record<ServerName, string> = { portcullis: 'Portcullis', postfix: 'Postfix', haraka: 'Haraka' };

export const PORTS: Record<ServerName, number> = { postfix: 2601, haraka: 2611, portcullis: 2621 };

export type StartOptions = {
  port: number;
  /** A fresh 0755 directory of this run, on the same file system for every server. */
  scratchDir: string;
  repoDir: string;
  /** Keep servers' logs that cost throughput (Postfix's maillog). */
  debug: boolean;
  log: (line: string) => void;
  /** Extra main.cf lines for the Postfix peer (e.g. a larger message_size_limit). */
  postfixMainCf?: readonly string[];
  /** The Postfix peer listens through postscreen (bench/defense.ts). */
  postscreen?: boolean;
  /** More TOML for Portcullis's configuration (whole sections). */
  portcullisToml?: string;
  /** Node options for Portcullis, before its script (e.g. `--trace-gc`); node:cluster passes them on to the workers. */
  portcullisNodeArgs?: readonly string[];
  /** The same for the Haraka peer (node:cluster passes them on to its workers too). */
  harakaNodeArgs?: readonly string[];
};

export type RunningServer = {
  /** The process whose tree is measured (children included). */
  rootPid: number;
  version: string;
  /** Why the server is no longer usable, or undefined while it runs. */
  failure: () => string | undefined;
  stop: () => Promise<void>;
  /** Where the server's stdout and stderr go (a Node server's inspector addresses among them). */
  logPath?: string;
};

export async function startServer(name: ServerName, options: Omit<StartOptions, 'port'>): Promise<RunningServer> {
  const port = PORTS[name];
  // A stale server on the port would be measured instead of ours.
  if (!(await waitForFreePort(port, 10_000))) throw new Error(`port ${port} is already in use`);
  const start = { portcullis: startPortcullis, postfix: startPostfix, haraka: startHaraka }[name];
  return start({ ...options, port });
}
