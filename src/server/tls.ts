// The server's TLS material and policy: the configured certificate, or a self-signed one generated
// once (with the openssl command: Node has no API to create X.509 certificates) for the default
// setup, and the one SecureContext every STARTTLS session uses: TLS 1.2 and 1.3 only, the server's
// cipher order (tls.ciphers, no CBC by default), no renegotiation (RFC 5746 made it safe, not cheap:
// each one costs the server a full handshake, a known CPU DoS; SMTP never needs it).
// Never sends a private key anywhere; generated keys are written owner-only.

import { execFile } from 'node:child_process';
import { constants } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { DEFAULT_TLS_CIPHERS, type Config } from '../config/types.ts';

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

/**
 * The context options of the server's TLS policy (config/keys/smtp.ts validates tls.ciphers with
 * the same options). Security: SSL_OP_NO_RENEGOTIATION makes OpenSSL answer a TLS 1.2 client's
 * renegotiation ClientHello with a no_renegotiation alert; TLS 1.3 has no renegotiation at all.
 * Node's own limit (tls.CLIENT_RENEG_LIMIT, 3 per 10 minutes) only guards sockets a tls.Server
 * made: a STARTTLS socket wrapped by hand had none, and 20 renegotiations in 59 ms were accepted.
 */
export function serverTlsOptions(ciphers: string): tls.SecureContextOptions {
  return {
    minVersion: 'TLSv1.2',
    ciphers,
    honorCipherOrder: true,
    secureOptions: constants.SSL_OP_NO_RENEGOTIATION | constants.SSL_OP_CIPHER_SERVER_PREFERENCE,
  };
}

export async function loadSecureContext(files: TlsFiles | null, policy: { ciphers: string } = { ciphers: DEFAULT_TLS_CIPHERS }): Promise<tls.SecureContext | null> {
  if (files === null) return null;
  const [cert, key] = await Promise.all([readFile(files.certFile), readFile(files.keyFile)]);
  return tls.createSecureContext({ cert, key, ...serverTlsOptions(policy.ciphers) });
}
