// The server's TLS material: the configured certificate, or a self-signed one generated once
// (with the openssl command: Node has no API to create X.509 certificates) for the default setup.
// Never sends a private key anywhere; generated keys are written owner-only.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import type { Config } from '../config/types.ts';

const run = promisify(execFile);

export type TlsFiles = { certFile: string; keyFile: string; isGenerated: boolean };

/** Where the self-signed pair lives: beside the spool ("var/spool" -> "var/tls"). */
export function generatedTlsDir(cfg: Config): string {
  return path.join(path.dirname(path.resolve(cfg.spool.dir)), 'tls');
}

/** Returns the files to use, generating a self-signed pair when none is configured; null when TLS is off or cannot be had. */
export async function ensureTlsFiles(cfg: Config, warn: (msg: string) => void): Promise<TlsFiles | null> {
  if (!cfg.tls.enabled) return null;
  if (cfg.tls.certFile !== '' && cfg.tls.keyFile !== '') {
    return { certFile: cfg.tls.certFile, keyFile: cfg.tls.keyFile, isGenerated: false };
  }
  const dir = generatedTlsDir(cfg);
  const certFile = path.join(dir, 'self-signed.crt');
  const keyFile = path.join(dir, 'self-signed.key');
  if (existsSync(certFile) && existsSync(keyFile)) return { certFile, keyFile, isGenerated: true };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const host = cfg.smtp.hostname;
  try {
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', keyFile, '-out', certFile, '-days', '825', '-subj', `/CN=${host}`,
      '-addext', `subjectAltName=DNS:${host}`,
    ], { timeout: 30_000 });
  } catch (err) {
    warn(`STARTTLS disabled: could not generate a self-signed certificate with openssl (${(err as Error).message.split('\n')[0]}); set tls.cert and tls.key`);
    return null;
  }
  return { certFile, keyFile, isGenerated: true };
}

export async function loadSecureContext(files: TlsFiles | null): Promise<tls.SecureContext | null> {
  if (files === null) return null;
  const [cert, key] = await Promise.all([readFile(files.certFile), readFile(files.keyFile)]);
  return tls.createSecureContext({ cert, key, minVersion: 'TLSv1.2' });
}
