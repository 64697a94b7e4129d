// The delivery side of one server, assembled from the configuration: the router, one courier per
// destination (SMTP by MX or to a fixed next hop, LMTP, Maildir), BATV signing of outgoing
// reverse-paths, DSN messages queued through the spool like any other, around one QueueManager.
// Runs in the supervising process only (the primary, or the single process): the queue is a
// singleton per spool (the control socket is its lock). Also owns the commit-time rewrite of a
// message's recipients (BATV tag stripped, aliases expanded), which the serving processes apply
// before their spool commit, as Postfix's cleanup expands virtual aliases before the queue file.
// Never speaks SMTP to clients and never decides a schedule (queue/ does).

import os from 'node:os';
import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import { batvPolicy, isBatvAddress, loadBatvKeys, signReversePath, stripBatvTag, type BatvPolicy } from '../delivery/batv.ts';
import { composeDsn, DSN_FULL_RETURN_MAX_BYTES, type DsnAction } from '../delivery/dsn.ts';
import { LmtpCourier } from '../delivery/lmtp.ts';
import { MaildirCourier } from '../delivery/maildir.ts';
import { resolveMx, selfAddresses } from '../delivery/mx.ts';
import { domainOf, REFUSED_REPLY, Router } from '../delivery/router.ts';
import { SmtpCourier } from '../delivery/smtp.ts';
import type { Courier, DeliveryJob, Route } from '../delivery/types.ts';
import { createDnsClient } from '../dns/resolver.ts';
import type { AcceptedMessage } from '../message/accepted.ts';
import type { Envelope } from '../spool/types.ts';
import { DELIVERY_REPLY } from '../protocol/replies.ts';
import { QueueManager, type QueueNotice } from '../queue/manager.ts';
import type { NoticeKind } from '../queue/schedule.ts';
import { JournalSpool } from '../spool/journal.ts';
import { openMessage } from '../spool/reader.ts';
import { newSessionId } from './session-id.ts';

/** A DSN returns at most this much of a message even with RET=FULL: it must itself be deliverable. */
const DSN_RETURN_CAP_BYTES = 10 * 1024 * 1024;

/** The router the configuration describes (also used by the serving processes at commit). */
export function routerFor(cfg: Config): Router {
  return new Router({ routes: cfg.routes, aliases: cfg.aliases, localDomains: cfg.domains.local, hostname: cfg.smtp.hostname });
}

/**
 * The recipients a message is queued for: a BATV tag on a local address is stripped (the batv
 * check judged it at RCPT; the mailbox is the user's), then aliases are expanded (one recipient
 * may become several; the address the sender used stays as ORCPT, RFC 3461 4.2).
 */
export function queuedRecipients(message: AcceptedMessage, router: Router): AcceptedMessage {
  const stripped = message.recipients.map((r, index) => {
    const address = router.isLocal(r.address) ? stripBatvTag(r.address) : r.address;
    const orcpt = r.orcpt ?? (address !== r.address ? { addrType: 'rfc822', address: r.address } : undefined);
    return { index, address, ...(r.notify !== undefined ? { notify: r.notify } : {}), ...(orcpt !== undefined ? { orcpt } : {}) };
  });
  const expanded = router.expandRecipients(stripped);
  const unchanged = expanded.length === message.recipients.length && expanded.every((r, i) => r.address === message.recipients[i].address && r.orcpt === message.recipients[i].orcpt);
  if (unchanged) return message;
  return {
    ...message,
    recipients: expanded.map((r) => ({ address: r.address, ...(r.notify !== undefined ? { notify: r.notify } : {}), ...(r.orcpt !== undefined ? { orcpt: r.orcpt } : {}) })),
  };
}

export type CommitReport = { queueId: string; location: string; envelope: Envelope };

export type DeliveryService = {
  /** The manager, once its state is open (null while the disk refuses it: see startDelivery). */
  manager(): QueueManager | null;
  /** A serving process's spool committed a message / sealed a segment (kept until the manager opens). */
  committed(report: CommitReport): void;
  sealed(segmentFile: string): void;
  /** A writer process is gone: its segments are sealed. */
  writerGone(writerId: string): void;
  /** Drains deliveries in flight (bounded), closes couriers, the DSN writer and the state log. */
  stop(graceMs: number): Promise<void>;
};

export type DeliveryOptions = {
  /** The queue's state log fails or works again (MAIL is refused with 452 4.3.1 meanwhile). */
  onHealth: (isHealthy: boolean) => void;
  /** Writers running now (a manager opened late must not scan their segments). */
  liveWriterIds: () => string[];
};

/** A queue whose state cannot be opened (a full disk) is tried again this often. */
const OPEN_RETRY_MS = 5_000;

const ACTION_OF: Record<NoticeKind, DsnAction> = { failure: 'failed', delay: 'delayed', success: 'delivered', relayed: 'relayed' };

export async function startDelivery(cfg: Config, log: Logger, opts: DeliveryOptions): Promise<DeliveryService> {
  const router = routerFor(cfg);
  const dns = createDnsClient(cfg.dns);
  const self = {
    hostnames: [cfg.smtp.hostname],
    addresses: selfAddresses(cfg.smtp.listen, Object.values(os.networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address))),
  };
  const batv: BatvPolicy | null = cfg.batv.domains.length > 0 && cfg.batv.keys.length > 0 ? batvPolicy(cfg.batv, loadBatvKeys(cfg.batv.keys)) : null;
  const heloName = cfg.smtp.hostname;

  const courierFor = (destination: string, route: Route): Courier => {
    switch (route.kind) {
      case 'mx':
        return signing(
          new SmtpCourier({
            heloName,
            tls: route.tls,
            hosts: async (job) => {
              const r = await resolveMx(domainOf(job.recipients[0].address), { dns, self });
              if (r.kind !== 'candidates') return { status: r.kind, reply: r.reply };
              return r.candidates.map((c) => ({ host: c.address, port: c.port, name: c.host }));
            },
          }),
        );
      case 'smtp':
        return signing(new SmtpCourier({ heloName, tls: route.tls, hosts: [{ host: route.host, port: route.port }] }));
      case 'lmtp':
        return new LmtpCourier({ heloName, target: 'socket' in route ? { socket: route.socket } : { host: route.host, port: route.port } });
      case 'maildir':
        return new MaildirCourier({ root: route.path, hostname: os.hostname() });
      case 'discard':
        return DISCARD;
      case 'refuse':
        // The router answers refusals itself; a courier for one is our bug.
        throw new Error(`no courier for the refuse route of ${destination}`);
    }
  };

  /** Outgoing mail whose sender is one of our BATV domains leaves with a signed return path, so
   *  that only bounces of mail we really sent come back through the batv check. */
  const signing = (inner: Courier): Courier => {
    if (batv === null) return inner;
    const policy = batv;
    return {
      deliver: (job: DeliveryJob, signal: AbortSignal) =>
        inner.deliver(isBatvAddress(job.reversePath, policy) ? { ...job, reversePath: signReversePath(job.reversePath, policy, Date.now()) } : job, signal),
      close: () => inner.close(),
    };
  };

  // DSNs are messages of the supervising process: its own spool writer (its own segments).
  let manager: QueueManager | null = null;
  const dsnWriterId = `q${process.pid}`;
  const dsnAdded = new Map<string, Promise<void>>();
  const dsnSpool = await JournalSpool.open({
    dir: cfg.spool.dir,
    journalMaxMessageBytes: cfg.spool.journalMaxMessageBytes,
    segmentMaxBytes: cfg.spool.segmentMaxBytes,
    writerId: dsnWriterId,
    onSealed: (file) => manager?.sealed(file),
    onCommitted: (committed, envelope) => {
      dsnAdded.set(committed.queueId, manager!.committed({ ...committed, envelope }).catch((err: unknown) => log.warn({ err, queueId: committed.queueId }, 'DSN queue record not yet durable')));
    },
  });

  const onDsn = async (notice: QueueNotice): Promise<void> => {
    const opened = await openMessage(cfg.spool.dir, notice.queueId, notice.location);
    if (opened === null) {
      log.error({ queueId: notice.queueId, kind: notice.kind }, 'DSN not sent: the original message cannot be read');
      return;
    }
    // Returned whole when RET or the size says so (and it is not too large to travel), else its
    // header section only: then only the first piece of the file is read.
    const env = opened.envelope;
    const isFull = (env.ret === 'FULL' || (env.ret === undefined && env.size <= DSN_FULL_RETURN_MAX_BYTES)) && env.size <= DSN_RETURN_CAP_BYTES;
    const content = await readContent(opened.content(), isFull ? env.size : HEADER_READ_BYTES);
    const nowMs = Date.now();
    const composed = composeDsn({
      reportingMta: cfg.smtp.hostname,
      queueId: notice.queueId,
      reversePath: env.reversePath,
      ...(env.envid !== undefined ? { envid: env.envid } : {}),
      ret: isFull ? 'FULL' : 'HDRS',
      arrivalMs: Date.parse(env.receivedAt),
      smtputf8: env.smtputf8,
      bodyType: env.body,
      recipients: notice.recipients.map((r) => ({
        address: r.address,
        ...(r.notify !== undefined ? { notify: r.notify } : {}),
        ...(r.orcpt !== undefined ? { orcpt: r.orcpt } : {}),
        action: ACTION_OF[notice.kind],
        reply: r.reply,
        remoteMta: r.remoteMta,
        lastAttemptMs: r.lastAttemptMs,
        ...(notice.kind === 'delay' ? { willRetryUntilMs: notice.willRetryUntilMs } : {}),
      })),
      content,
      nowMs,
    });
    if (composed === null) return;
    const queueId = `${newSessionId(nowMs)}D0`;
    const message: AcceptedMessage = {
      queueId,
      sessionId: 'dsn',
      receivedAtMs: nowMs,
      client: { address: '127.0.0.1', port: 0, heloName: null, isTls: false },
      reversePath: '',
      bodyType: composed.bodyType,
      smtputf8: composed.smtputf8,
      recipients: [{ address: composed.recipient, notify: 'NEVER' }],
      head: [composed.bytes],
      rest: { kind: 'memory', chunks: [] },
      size: composed.bytes.length,
    };
    await dsnSpool.commit(queuedRecipients(message, router));
    log.info({ queueId: notice.queueId, dsn: queueId, kind: notice.kind, to: composed.recipient, recipients: composed.reported.length }, 'DSN queued');
    // Its queue record is durable before the original's notice counts as sent.
    await dsnAdded.get(queueId);
    dsnAdded.delete(queueId);
  };

  const open = (): Promise<QueueManager> =>
    QueueManager.open({
      spoolDir: cfg.spool.dir,
      router: (address) => {
        const d = router.route(address);
        return d.route.kind === 'refuse' ? { refusal: REFUSED_REPLY } : { destination: d.key, route: d.route };
      },
      courierFor,
      onDsn,
      onHealth: opts.onHealth,
      log,
      limits: {
        maxLifetimeMs: cfg.queue.maxLifetimeSeconds * 1000,
        delayWarningMs: cfg.queue.delayWarningSeconds * 1000,
        minBackoffMs: cfg.queue.minBackoffSeconds * 1000,
        maxBackoffMs: cfg.queue.maxBackoffSeconds * 1000,
        destinationConcurrency: cfg.queue.destinationConcurrency,
      },
      // The DSN writer and the serving processes are live: their segments are not sealed yet.
      liveWriterIds: [dsnWriterId, ...opts.liveWriterIds()],
    });

  // Reports that come while the queue cannot open (a full disk: the server still starts and
  // answers MAIL 452 4.3.1, as for a full spool) wait for it, in order.
  const waiting: Array<(m: QueueManager) => void> = [];
  let isStopped = false;
  let retry: NodeJS.Timeout | null = null;
  const tryOpen = async (): Promise<void> => {
    try {
      manager = await open();
    } catch (err) {
      if (isStopped) return;
      if (retry === null) {
        // A full disk is an operating condition (as a low spool), not our failure: warn.
        const e = err as NodeJS.ErrnoException;
        log.warn({ code: e.code, reason: e.message }, `queue state cannot be opened; MAIL is answered 452 4.3.1, retrying every ${OPEN_RETRY_MS / 1000} s`);
        opts.onHealth(false);
      }
      retry = setTimeout(() => void tryOpen(), OPEN_RETRY_MS);
      retry.unref();
      return;
    }
    if (retry !== null) {
      log.info('queue state opened');
      opts.onHealth(true);
    }
    retry = null;
    for (const op of waiting.splice(0)) op(manager);
  };
  await tryOpen();
  const when = (op: (m: QueueManager) => void): void => {
    if (manager !== null) op(manager);
    else waiting.push(op);
  };
  const notDurable = (queueId: string) => (err: unknown) => log.warn({ err, queueId }, 'queue record not yet durable');
  return {
    manager: () => manager,
    committed: (r) => when((m) => void m.committed(r).catch(notDurable(r.queueId))),
    sealed: (file) => when((m) => m.sealed(file)),
    writerGone: (writerId) =>
      when((m) => void m.writerGone(writerId).catch((err: unknown) => log.error({ err, writerId }, "queue: cannot seal a stopped writer's segments"))),
    async stop(graceMs) {
      isStopped = true;
      if (retry !== null) clearTimeout(retry);
      if (manager !== null) {
        await manager.drain(graceMs);
        await manager.close();
      }
      await dsnSpool.close();
    },
  };
}

/** The discard route: every recipient counts as delivered, nothing is sent anywhere. */
const DISCARD: Courier = {
  deliver: async (job) => job.recipients.map(() => ({ status: 'delivered' as const, reply: DELIVERY_REPLY.discarded, remoteMta: null })),
  close: async () => undefined,
};

/** Enough of a message to hold its header section (a DSN returning headers only). */
const HEADER_READ_BYTES = 1024 * 1024;

async function readContent(pieces: AsyncIterable<Buffer>, maxBytes: number): Promise<Buffer> {
  const out: Buffer[] = [];
  let bytes = 0;
  for await (const p of pieces) {
    out.push(p);
    bytes += p.length;
    if (bytes >= maxBytes) break;
  }
  const all = Buffer.concat(out);
  return all.length > maxBytes ? all.subarray(0, maxBytes) : all;
}
