// The milter client's own CPU per message (issue 12), without an SMTP server around it: this
// process holds `--concurrency` conversations with one real opendkim (signing, as the milter tests
// start it) and runs each message through CONNECT, HELO, MAIL, RCPT, six header fields, EOH, a
// 64 KiB body (two SMFIC_BODY packets) and EOB, one filter connection per message, as a session
// of bench:filters does. What it prints is this process's CPU (user + system) per message, the
// filter's not included. Given other checkouts (`--repo DIR`, repeatable), it loads the client from
// each in turn and alternates them round by round (A B B A ...), for an A/B of a change.
// Not part of `npm run bench`. Every message must come back signed, else the run fails.
//
//   node bench/milter-client.ts [--messages 1000] [--concurrency 20] [--rounds 2] [--repo DIR ...]

import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { startOpendkim } from '../test/helpers/milter-peers.ts';
import type { MilterConversation as Conversation, SessionFacts, TransactionFacts } from '../src/filters/milter/conversation.ts';

const { values } = parseArgs({
  options: {
    messages: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '2' },
    repo: { type: 'string', multiple: true, default: [] },
  },
});
const messages = Number(values.messages);
const concurrency = Number(values.concurrency);
const repos = values.repo.length > 0 ? values.repo : [join(import.meta.dirname, '..')];

type ConversationClass = new (...args: ConstructorParameters<typeof Conversation>) => Conversation;
const builds: { repo: string; Conversation: ConversationClass }[] = [];
for (const repo of repos) {
  const mod = (await import(join(repo, 'src/filters/milter/conversation.ts'))) as { MilterConversation: ConversationClass };
  builds.push({ repo, Conversation: mod.MilterConversation });
}

// A body of whole CRLF lines (opendkim signs nothing for a body whose last line has no end).
const body = Buffer.alloc(65_544, 'abcdefghij\r\n');
const chunks = [body.subarray(0, 16_384), body.subarray(16_384, 40_000), body.subarray(40_000)];
const fields = [
  { name: 'Received', value: ' from client.test (localhost [127.0.0.1])\r\n\tby bench.local (Portcullis) with ESMTP id ABCDEF\r\n\tfor <r@bench.test>; Thu, 3 Dec 2026 11:00:00 +0000' },
  { name: 'From', value: ' <sender@example.test>' },
  { name: 'To', value: ' <r@bench.test>' },
  { name: 'Date', value: ' Thu, 3 Dec 2026 11:00:00 +0000' },
  { name: 'Subject', value: ' hello' },
  { name: 'Message-Id', value: ' <1234@client.test>' },
];

const dkim = await startOpendkim();
try {
  const spec = { address: { kind: 'tcp' as const, host: '127.0.0.1', port: dkim.port }, connectTimeoutMs: 5000, commandTimeoutMs: 5000, maxBodyBytes: 10_000_000 };
  const one = async (Conversation: ConversationClass, i: number): Promise<void> => {
    const c = new Conversation(spec);
    const facts: SessionFacts = { hostname: 'bench.local', daemonName: 'portcullis', client: { address: '127.0.0.1', port: 40_000 + (i % 20_000), name: null }, local: { address: '127.0.0.1', port: 25 }, heloName: 'client.test', tls: null, auth: null };
    const deadline = Date.now() + 60_000;
    const txn: TransactionFacts = { seq: 1, queueId: `Q${i}X`, mailArgs: ['<sender@example.test>'], sender: 'sender@example.test' };
    await c.connect(facts, deadline);
    await c.helo(facts, deadline);
    await c.mail(facts, txn, deadline);
    await c.rcpt(facts, txn, ['<r@bench.test>'], deadline);
    const r = await c.content(facts, txn, [['<r@bench.test>']], fields, async function* () {
      yield* chunks;
    }, deadline);
    c.close();
    if ((r.kind !== 'continue' && r.kind !== 'accept') || r.modifications === undefined) throw new Error(`message ${i} not signed: ${JSON.stringify(r).slice(0, 200)}`);
  };
  const load = async (Conversation: ConversationClass, count: number): Promise<void> => {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < count) await one(Conversation, next++);
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  };
  const order = (round: number): typeof builds => (round % 2 === 0 ? builds : [...builds].reverse());
  for (const b of builds) await load(b.Conversation, Math.min(200, messages)); // warm-up
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const b of order(round)) {
      const cpu = process.cpuUsage();
      const start = performance.now();
      await load(b.Conversation, messages);
      const used = process.cpuUsage(cpu);
      const seconds = (performance.now() - start) / 1000;
      process.stdout.write(`${b.repo}: ${(messages / seconds).toFixed(0)} msg/s, ${((used.user + used.system) / 1000 / messages).toFixed(3)} ms CPU/msg (user ${(used.user / 1000 / messages).toFixed(3)}, system ${(used.system / 1000 / messages).toFixed(3)})\n`);
    }
  }
} finally {
  await dkim.stop();
}
