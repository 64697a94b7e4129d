// The validated configuration: the one shape every other module reads.
// Owns nothing but types and the embedded defaults; never reads files (see load.ts). A policy
// check's sections, their types and defaults live in its own directory and come in through the
// registry (policy/registry.ts, configuration parts only, no check code).
// Keys and defaults are documented in docs/configuration.md; keep the two in step.

import type { Route } from '../delivery/types.ts';
import { checkDefaults, POLICY_CHECK_NAMES, type CheckSections, type PolicyCheckName } from '../policy/registry.ts';

export type ListenAddress = { host: string; port: number };

/** What happens to a message whose data holds a bare CR, bare LF or NUL (SMTP smuggling class). */
export type BareLineEndingPolicy = 'reject' | 'normalize';

export type SmtpConfig = {
  listen: ListenAddress[];
  hostname: string;
  /** Advertised in SIZE (RFC 1870) and enforced while reading. */
  maxMessageBytes: number;
  /** Content octets of one message held in memory; past them the body streams to its spool file. */
  bodyMemoryBytes: number;
  /** Content octets all sessions of one process (a worker) hold in memory together; a body
   *  that would go past it streams to its spool file early. At least bodyMemoryBytes. */
  bodyMemoryBudgetBytes: number;
  /** "auto" = one worker process per core; 1 = serve from the main process. */
  workers: number | 'auto';
  /** RFC 5321 4.5.3.1.4: at least 512 octets including CRLF. */
  maxCommandLineBytes: number;
  /** RFC 5321 4.5.3.1.6: at least 1000 octets including CRLF. */
  maxTextLineBytes: number;
  /** RFC 5321 4.5.3.1.8: at least 100 recipients. */
  maxRecipients: number;
  /** Protocol errors (4xx/5xx caused by the client) before 421 4.7.0 and close. */
  maxErrors: number;
  /** Transactions (MAIL commands) per session before 421 4.7.0 and close. */
  maxTransactions: number;
  /** Accept HELO/EHLO without an argument (broken clients); identity becomes the client address. */
  allowEmptyHelo: boolean;
  /** VRFY answer: "252" never confirms; "disabled" answers 502. */
  vrfy: '252' | 'disabled';
  /** EXPN answer: "disabled" answers 502; "252" answers like VRFY. */
  expn: '252' | 'disabled';
  bareLineEndings: BareLineEndingPolicy;
  /** RFC 5321 4.5.3.2.7: the server waits at least 5 minutes for a command. */
  commandTimeoutSeconds: number;
  /** RFC 5321 4.5.3.2.5-6: data block timeout (between reads while receiving data). */
  dataTimeoutSeconds: number;
  /** Graceful stop: how long a session in the middle of its data may take to finish it. */
  stopGraceSeconds: number;
  /** Every connection starts with a PROXY protocol header from a proxy in proxy.trusted. */
  proxyProtocol: boolean;
};

/** [proxy]: the load balancers allowed to send a PROXY protocol header (smtp.proxy_protocol). */
export type ProxyConfig = {
  /** Normalised "address/prefix" networks; a connection from anywhere else is closed at once. */
  trusted: string[];
  /** How long a trusted proxy has to send the whole header. */
  headerTimeoutSeconds: number;
};

/** [access]: networks never limited, and networks refused with 554 at connect (docs/defense.md). */
export type AccessConfig = {
  /** Normalised networks that bypass every admission limit. */
  allow: string[];
  /** Normalised networks answered 554 5.7.1 in place of the greeting. */
  block: string[];
  /** A file of more blocked networks, one CIDR per line, # comments; '' = none. */
  blockFile: string;
};

/** [limits], the admission part (docs/defense.md "Admission"). */
export type AdmissionLimitsConfig = {
  maxConnections: number;
  maxConnectionsPerIp: number;
  maxConnectionsPerNetwork: number;
  /** Connections per client address in a sliding window, e.g. { count: 60, windowSeconds: 60 }. */
  connectionRatePerIp: { count: number; windowSeconds: number };
  /** The rate is counted by the cluster in the Redis state store as well as by the node (defense/shared-rate.ts). */
  connectionRateShared: boolean;
  /** 554 mode: a client refused at connect is closed after this long, or this many commands. */
  refusedSessionSeconds: number;
  refusedSessionCommands: number;
  /** 554-mode sessions one process holds at once; past it a refused client is closed right after the 554. */
  maxRefusedSessions: number;
};

export type TlsConfig = {
  /** PEM files; both empty means a self-signed certificate generated under the spool's parent dir. */
  certFile: string;
  keyFile: string;
  /** Advertise and honour STARTTLS. */
  enabled: boolean;
  /** OpenSSL cipher list (TLS 1.2) and TLS 1.3 suites, in the server's order of preference. */
  ciphers: string;
  /** How long a STARTTLS handshake may take. */
  handshakeTimeoutSeconds: number;
};

export type SpoolConfig = {
  dir: string;
  /** Messages up to this size are appended to the shared journal segment (group commit);
   *  larger ones are written to a file of their own. */
  journalMaxMessageBytes: number;
  /** A segment is closed and a new one started past this size. */
  segmentMaxBytes: number;
  /** Below this much free space on the spool's file system MAIL is answered 452 4.3.1; 0 = off. */
  minFreeBytes: number;
};

export type LogConfig = {
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
  /** "auto": one human line per event on a terminal, JSON lines otherwise. */
  format: 'auto' | 'json' | 'pretty';
};

export type VerdictsConfig = {
  /** Policy refusals in one session after which it ends with 421 4.7.0. */
  maxRefusalsPerSession: number;
  /** The client network a refusal with a TTL is remembered for across sessions. */
  ipv4Prefix: number;
  ipv6Prefix: number;
};

export type DnsConfig = {
  /** "ip" or "ip:port" ("[v6]:port"); empty = the system resolver. */
  servers: string[];
  timeoutMs: number;
  tries: number;
};

/** [queue]: the delivery schedule (docs/delivery.md "Queue"). Times in seconds. */
export type QueueConfig = {
  maxLifetimeSeconds: number;
  delayWarningSeconds: number;
  minBackoffSeconds: number;
  maxBackoffSeconds: number;
  destinationConcurrency: number;
};

/** The [routes] table (docs/delivery.md): where mail goes, by recipient domain. */
export type RoutesConfig = {
  /** Domains not in domains.local without an entry of their own (relayed mail). */
  default: Route;
  /** Domains in domains.local without an entry of their own, and the bare Postmaster. */
  local: Route;
  /** Per domain, lowercased. */
  domains: Record<string, Route>;
};

/** [limits], the session's time and command limits (config/keys/session-limits.ts; docs/defense.md). */
export type SessionLimitsConfig = {
  /** A command line must be complete within this, however slowly it trickles in; 0 = off. */
  commandDeadlineSeconds: number;
  /** During DATA/BDAT at least this many octets per window, or 421 4.4.2; 0 = off. */
  minDataRateBytes: number;
  minDataRateWindowSeconds: number;
  /** A session ends (421 4.4.2) this long after it began; 0 = off. */
  sessionMaxSeconds: number;
  /** NOOP, RSET, VRFY, EXPN and HELP since the last transaction opened, before 421 4.7.0; 0 = no cap. */
  maxIdleCommands: number;
  /** Stress mode: on at this share of the connection limit (percent), off below the release share. */
  stressOnPercent: number;
  stressOffPercent: number;
  /** Under stress every timeout and the command deadline are at most this. */
  stressTimeoutSeconds: number;
};

/** The whole [limits] table; admission's keys join it as another member of the intersection. */
export type LimitsConfig = AdmissionLimitsConfig & SessionLimitsConfig;

/** [tarpit]: escalating delay of error replies (docs/defense.md "Tarpit"). */
export type TarpitConfig = {
  freeErrors: number;
  initialDelayMs: number;
  maxDelaySeconds: number;
  /** How long a tarpitted client's network is remembered (its next session starts delayed); 0 = not remembered. */
  rememberSeconds: number;
};

/** The core sections; each policy check adds its own (policy/checks/<name>/config.ts). */
export type CoreConfig = {
  smtp: SmtpConfig;
  tls: TlsConfig;
  proxy: ProxyConfig;
  access: AccessConfig;
  /** [pregreet]: the greet pause and early-talker test (docs/defense.md). */
  pregreet: { enabled: boolean; waitSeconds: number; action: 'reject' | 'disconnect'; passTtlSeconds: number; rememberSeconds: number };
  /** [[listener]] profiles; empty: smtp.listen with smtp.proxy_protocol (the simple form). */
  listener: import('./keys/listeners.ts').ListenerConfig[];
  limits: LimitsConfig;
  tarpit: TarpitConfig;
  domains: { local: string[] };
  relay: { networks: string[] };
  spool: SpoolConfig;
  verdicts: VerdictsConfig;
  /** "sqlite" (a file in the spool dir) or "redis://host:port/db". */
  state: { store: string };
  policy: { checks: PolicyCheckName[] };
  dns: DnsConfig;
  queue: QueueConfig;
  routes: RoutesConfig;
  /** [aliases]: an address (lowercased) -> the addresses it is delivered to instead. */
  aliases: Record<string, string[]>;
  /** Prometheus metrics over HTTP; null = off. */
  metrics: { listen: ListenAddress | null };
  log: LogConfig;
};

/** The validated configuration: the core sections and every registered check's. */
export type Config = CoreConfig & CheckSections;

/**
 * The default tls.ciphers: forward-secret AEAD suites only, no CBC (the Lucky13 / padding-oracle
 * class), in the server's order: the TLS 1.3 suites, then ECDHE with AES-GCM or ChaCha20-Poly1305
 * (ECDSA and RSA certificates), then DHE-RSA with AES-GCM for old clients without ECDHE.
 */
export const DEFAULT_TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
  'DHE-RSA-AES128-GCM-SHA256', 'DHE-RSA-AES256-GCM-SHA384',
].join(':');

/** The embedded default: what `npm start` serves with no config file. */
export function defaultConfig(): Config {
  return {
    ...checkDefaults(),
    smtp: {
      listen: [{ host: '127.0.0.1', port: 2525 }],
      hostname: 'localhost',
      maxMessageBytes: 26_214_400,
      bodyMemoryBytes: 1_048_576,
      bodyMemoryBudgetBytes: 33_554_432,
      workers: 'auto',
      maxCommandLineBytes: 512,
      maxTextLineBytes: 1000,
      maxRecipients: 100,
      maxErrors: 10,
      maxTransactions: 100,
      allowEmptyHelo: false,
      vrfy: '252',
      expn: 'disabled',
      bareLineEndings: 'reject',
      commandTimeoutSeconds: 300,
      dataTimeoutSeconds: 180,
      stopGraceSeconds: 30,
      proxyProtocol: false,
    },
    tls: { certFile: '', keyFile: '', enabled: true, ciphers: DEFAULT_TLS_CIPHERS, handshakeTimeoutSeconds: 10 },
    proxy: { trusted: [], headerTimeoutSeconds: 5 },
    listener: [],
    pregreet: { enabled: false, waitSeconds: 6, action: 'reject', passTtlSeconds: 86_400, rememberSeconds: 3_600 },
    access: { allow: ['127.0.0.0/8', '::1/128'], block: [], blockFile: '' },
    limits: {
      maxConnections: 10_000, maxConnectionsPerIp: 20, maxConnectionsPerNetwork: 100, connectionRatePerIp: { count: 60, windowSeconds: 60 }, connectionRateShared: false,
      refusedSessionSeconds: 10, refusedSessionCommands: 5, maxRefusedSessions: 100,
      commandDeadlineSeconds: 60,
      minDataRateBytes: 1024,
      minDataRateWindowSeconds: 60,
      sessionMaxSeconds: 1800,
      maxIdleCommands: 200,
      stressOnPercent: 70,
      stressOffPercent: 50,
      stressTimeoutSeconds: 10,
    },
    tarpit: { freeErrors: 3, initialDelayMs: 1000, maxDelaySeconds: 30, rememberSeconds: 3600 },
    domains: { local: ['localhost'] },
    relay: { networks: ['127.0.0.0/8', '::1/128'] },
    spool: { dir: 'var/spool', journalMaxMessageBytes: 1_048_576, segmentMaxBytes: 67_108_864, minFreeBytes: 104_857_600 },
    verdicts: { maxRefusalsPerSession: 3, ipv4Prefix: 24, ipv6Prefix: 64 },
    state: { store: 'sqlite' },
    policy: { checks: [...POLICY_CHECK_NAMES] },
    dns: { servers: [], timeoutMs: 2000, tries: 2 },
    // Nothing leaves this host until the operator picks a route (README: no relaying yet); what
    // the local domains accept is delivered, to Maildirs under var/ next to the spool.
    queue: { maxLifetimeSeconds: 5 * 86_400, delayWarningSeconds: 4 * 3_600, minBackoffSeconds: 300, maxBackoffSeconds: 4_000, destinationConcurrency: 20 },
    routes: { default: { kind: 'refuse' }, local: { kind: 'maildir', path: 'var/maildir' }, domains: {} },
    aliases: {},
    metrics: { listen: null },
    log: { level: 'info', format: 'auto' },
  };
}
