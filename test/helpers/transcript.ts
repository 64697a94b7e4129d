// Transcript files (C:/S: dialogues) and the runner that plays them through the sans-I/O core.
// The socket runner (socket-runner.ts) plays the same files against a real server.
//
// Format, one directive per line:
//   # comment
//   @config smtp.max_errors = 3     TOML key = TOML value, applied to the embedded default config
//   @peer 192.0.2.7                 client address (core runs only; sockets are always loopback)
//   @tls                            (core: the TLS handshake completes) / (socket: do the handshake)
//   C: EHLO a.example               send the line and CRLF; consecutive C lines go in one write
//   C~ "raw\n.\r\n"                 send raw bytes written as a JSON string (parsed, never evaluated)
//   S: 250-PIPELINING               expect exactly this reply line
//   S: 250 *                        "*" matches any run of characters
//   S: 5xx                          a code class: any single-line reply of that class
//   @closed                         the server has closed the connection
//   @spool-count 1                  messages committed so far (core: commit outputs)
//   @stored "text"                  content (Received: header removed) of the last stored message

import { readFileSync } from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { defaultConfig, type Config } from '../../src/config/types.ts';

export type Step =
  | { kind: 'send'; data: Buffer; text: string }
  | { kind: 'expect'; pattern: string; line: number }
  | { kind: 'tls' }
  | { kind: 'closed'; line: number }
  | { kind: 'spool-count'; count: number; line: number }
  | { kind: 'stored'; content: string; line: number };

export type Transcript = { name: string; config: Config; peer: string; steps: Step[] };

function snakeToCamel(s: string): string {
  return s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

export function applyConfigLine(cfg: Config, assignment: string): void {
  const eq = assignment.indexOf('=');
  const key = assignment.slice(0, eq).trim();
  const value = (parseToml(`v = ${assignment.slice(eq + 1).trim()}`) as { v: unknown }).v;
  const [section, name] = key.split('.');
  const target = (cfg as unknown as Record<string, Record<string, unknown>>)[section];
  const field = snakeToCamel(name);
  if (target === undefined || !(field in target)) throw new Error(`transcript: unknown config key ${key}`);
  target[field] = value;
}

export function parseTranscript(name: string, text: string): Transcript {
  const config = defaultConfig();
  config.domains.local = ['example.test'];
  config.smtp.hostname = 'mx.example.test';
  let peer = '127.0.0.1';
  const steps: Step[] = [];
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const raw = lines[n].replace(/\r$/, '');
    const line = n + 1;
    if (raw.trim() === '' || raw.startsWith('#')) continue;
    if (raw.startsWith('C: ')) {
      const t = raw.slice(3);
      steps.push({ kind: 'send', data: Buffer.from(`${t}\r\n`, 'utf8'), text: t });
    } else if (raw === 'C:') {
      steps.push({ kind: 'send', data: Buffer.from('\r\n'), text: '' });
    } else if (raw.startsWith('C~ ')) {
      const s = JSON.parse(raw.slice(3)) as string;
      steps.push({ kind: 'send', data: Buffer.from(s, 'latin1'), text: s });
    } else if (raw.startsWith('S: ')) {
      steps.push({ kind: 'expect', pattern: raw.slice(3), line });
    } else if (raw.startsWith('@config ')) {
      applyConfigLine(config, raw.slice(8));
    } else if (raw.startsWith('@peer ')) {
      peer = raw.slice(6).trim();
    } else if (raw === '@tls') {
      steps.push({ kind: 'tls' });
    } else if (raw === '@closed') {
      steps.push({ kind: 'closed', line });
    } else if (raw.startsWith('@spool-count ')) {
      steps.push({ kind: 'spool-count', count: Number(raw.slice(13)), line });
    } else if (raw.startsWith('@stored ')) {
      steps.push({ kind: 'stored', content: JSON.parse(raw.slice(8)) as string, line });
    } else {
      throw new Error(`${name}:${line}: cannot parse transcript line: ${raw}`);
    }
  }
  return { name, config, peer, steps };
}

export function loadTranscript(path: string): Transcript {
  return parseTranscript(path.split('/').pop()!, readFileSync(path, 'utf8'));
}

export function matches(pattern: string, line: string): boolean {
  if (/^\dxx$/.test(pattern)) return line.startsWith(pattern[0]) && /^\d{3} /.test(line);
  const re = new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 's');
  return re.test(line);
}

/** Strips the Received: header (first header, with its folded lines) we prepend. */
export function withoutReceived(content: string): string {
  const m = /^Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*/.exec(content);
  return m === null ? content : content.slice(m[0].length);
}
