// SmtpCourier against real and scripted next hops on loopback: Postfix's smtp-sink for the
// well-behaved peer, a node stub for wire checks and bad peers (hangs, closes mid-data, garbage,
// a 10 MB reply line, 5xx after the data, a 4xx greeting before the next host).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { SmtpCourier } from '../../src/delivery/smtp.ts';
import { testJob } from '../helpers/delivery-job.ts';
import { sinkContent, startSmtpSink, type SmtpSink } from '../helpers/mail-peers.ts';
import { freePort } from '../helpers/ports.ts';
import { testCerts } from '../helpers/server.ts';
import { startStubPeer, type StubBehaviour, type StubPeer } from '../helpers/stub-smtp-peer.ts';

const FAST = { greetingMs: 1500, commandMs: 1500, mailMs: 1500, rcptMs: 1500, dataInitMs: 1500, dataBlockMs: 1500, dataEndMs: 1500 };

function courier(port: number, over: Partial<ConstructorParameters<typeof SmtpCourier>[0]> = {}): SmtpCourier {
  return new SmtpCourier({ hosts: [{ host: '127.0.0.1', port }], heloName: 'out.example.test', tls: 'none', timeouts: FAST, connectTimeoutMs: 2000, ...over });
}

const signal = (): AbortSignal => new AbortController().signal;

/** The stored content a receiver should end up with: CRLF everywhere, ending in CRLF. */
function canonical(s: string): string {
  const c = s.replace(/\r\n|\r|\n/g, '\r\n');
  return c.endsWith('\r\n') ? c : `${c}\r\n`;
}

function unstuff(wire: Buffer): string {
  return wire.toString('latin1').split('\r\n').map((l) => (l.startsWith('.') ? l.slice(1) : l)).join('\r\n');
}

/** A stored message with every transparency hazard. */
const HAZARDS = 'Subject: dots\r\n\r\n.\r\n..two dots\r\n.one dot\r\nbare lf\nbare cr\rmixed\r\r\n.\n.\rend without newline';

describe('smtp-sink (Postfix) as the next hop', () => {
  let sink: SmtpSink;
  before(async () => {
    sink = await startSmtpSink();
  });
  after(async () => {
    await sink.stop();
  });

  test('delivers to every recipient; the dump holds the content canonical and unstuffed', async () => {
    const c = courier(sink.port);
    const job = testJob({ content: HAZARDS, recipients: ['a@example.test', { address: 'b@example.test', notify: ['SUCCESS', 'FAILURE'] }], envid: 'ENV 1' });
    const before = sink.dumps().length;
    const res = await c.deliver(job, signal());
    await c.close();
    assert.deepEqual(res.map((r) => [r.status, r.reply.code, r.remoteMta]), [['delivered', 250, '127.0.0.1'], ['delivered', 250, '127.0.0.1']]);
    const dumps = sink.dumps();
    assert.equal(dumps.length, before + 1);
    const dump = dumps.at(-1)!;
    // smtp-sink offers DSN: the parameters went on (as xtext).
    assert.match(dump, /^X-Mail-Args: <sender@example\.org> .*ENVID=ENV\+201/m);
    assert.match(dump, /^X-Rcpt-Args: <b@example\.test> NOTIFY=SUCCESS,FAILURE/m);
    // The dump is written with LF line ends; the content is ours, line for line.
    assert.ok(sinkContent(dump).startsWith(canonical(HAZARDS).replace(/\r\n/g, '\n')), sinkContent(dump));
  });

  test('without PIPELINING (smtp-sink -P) the lock-step session delivers too', async () => {
    const plain = await startSmtpSink(['-P']);
    try {
      const c = courier(plain.port);
      const res = await c.deliver(testJob({ recipients: ['a@example.test', 'b@example.test'] }), signal());
      await c.close();
      assert.deepEqual(res.map((r) => r.status), ['delivered', 'delivered']);
      assert.equal(plain.dumps().length, 1);
    } finally {
      await plain.stop();
    }
  });

  test('a hard-refused RCPT fails that recipient; a 5xx after the data fails; a 4xx after the data defers', async () => {
    const rcpt5 = await startSmtpSink(['-f', 'RCPT']);
    const dot5 = await startSmtpSink(['-f', '.']);
    const dot4 = await startSmtpSink(['-r', '.']);
    try {
      for (const [peer, want] of [[rcpt5, 'failed'], [dot5, 'failed'], [dot4, 'deferred']] as const) {
        const c = courier(peer.port);
        const res = await c.deliver(testJob(), signal());
        await c.close();
        assert.equal(res[0].status, want);
      }
    } finally {
      await Promise.all([rcpt5.stop(), dot5.stop(), dot4.stop()]);
    }
  });

  test('a 4xx greeting from the first host, connection refused from the second: the third (smtp-sink) delivers', async () => {
    const busy = await startStubPeer({ greeting: '421 4.3.2 busy, try later' });
    const refused = await freePort();
    try {
      const c = new SmtpCourier({ hosts: [{ host: '127.0.0.1', port: busy.port }, { host: '127.0.0.1', port: refused }, { host: '127.0.0.1', port: sink.port }], heloName: 'out.example.test', tls: 'none', timeouts: FAST });
      const res = await c.deliver(testJob(), signal());
      await c.close();
      assert.equal(res[0].status, 'delivered');
      assert.equal(busy.sessions.length, 1);
      assert.deepEqual(busy.sessions[0].commands, ['QUIT']);
    } finally {
      await busy.stop();
    }
  });

  test('hosts from a resolver function; a resolver that throws defers with 4.4.3; one that refuses gives its result to every recipient', async () => {
    const c = new SmtpCourier({ hosts: async () => [{ host: '127.0.0.1', port: sink.port }], heloName: 'out.example.test', tls: 'none', timeouts: FAST });
    assert.equal((await c.deliver(testJob(), signal()))[0].status, 'delivered');
    await c.close();
    const bad = new SmtpCourier({ hosts: async () => { throw new Error('SERVFAIL'); }, heloName: 'out.example.test' });
    const res = await bad.deliver(testJob(), signal());
    assert.deepEqual([res[0].status, res[0].reply.enhanced], ['deferred', '4.4.3']);
    const nullMx = new SmtpCourier({ hosts: async () => ({ status: 'failed', reply: { code: 556, enhanced: '5.1.10', lines: ['null MX'] } }), heloName: 'out.example.test' });
    const r2 = await nullMx.deliver(testJob({ recipients: ['a@example.test', 'b@example.test'] }), signal());
    assert.deepEqual(r2.map((r) => [r.status, r.reply.code]), [['failed', 556], ['failed', 556]]);
  });
});

describe('the wire', () => {
  test('DATA: a line of only ".", lines starting with dots, bare LF and CR arrive canonical and dot-stuffed, byte-identical after unstuffing', async () => {
    const peer = await startStubPeer({});
    try {
      const c = courier(peer.port, { cache: false });
      for (const chunkBytes of [1, 3, 7, 4096]) {
        const res = await c.deliver(testJob({ content: HAZARDS, chunkBytes }), signal());
        assert.equal(res[0].status, 'delivered');
      }
      assert.equal(peer.sessions.length, 4);
      for (const s of peer.sessions) {
        const wire = s.messages[0];
        assert.equal(wire.toString('latin1'), 'Subject: dots\r\n\r\n..\r\n...two dots\r\n..one dot\r\nbare lf\r\nbare cr\r\nmixed\r\n\r\n..\r\n..\r\nend without newline\r\n');
        assert.equal(unstuff(wire), canonical(HAZARDS));
        const raw = Buffer.concat(s.raw).toString('latin1');
        assert.equal(raw.replace(/\r\n/g, '').search(/[\r\n]/), -1, 'no bare CR or LF anywhere on the wire');
      }
    } finally {
      await peer.stop();
    }
  });

  test('BDAT (CHUNKING offered): the same canonical bytes, unstuffed, in chunks that add up', async () => {
    const peer = await startStubPeer({ keywords: ['PIPELINING', 'CHUNKING', '8BITMIME'] });
    try {
      const c = courier(peer.port, { cache: false });
      const res = await c.deliver(testJob({ content: HAZARDS }), signal());
      assert.equal(res[0].status, 'delivered');
      assert.ok(peer.sessions[0].commands.some((l) => /^BDAT \d+ LAST$/.test(l)));
      assert.ok(!peer.sessions[0].commands.includes('DATA'));
      assert.equal(peer.sessions[0].messages[0].toString('latin1'), canonical(HAZARDS));
      // A larger message goes in several chunks (about 256 KiB each), the last one LAST.
      const big = `Subject: big\r\n\r\n${'.dotted line\n'.repeat(60_000)}`;
      assert.equal((await c.deliver(testJob({ content: big, chunkBytes: 65536 }), signal()))[0].status, 'delivered');
      const bdats = peer.sessions[1].commands.filter((l) => l.startsWith('BDAT'));
      assert.ok(bdats.length >= 3 && bdats.at(-1)!.endsWith(' LAST') && bdats.slice(0, -1).every((l) => !l.endsWith('LAST')), bdats.join(', '));
      assert.equal(peer.sessions[1].messages[0].toString('latin1'), canonical(big));
    } finally {
      await peer.stop();
    }
  });

  test('PIPELINING: MAIL, every RCPT and DATA arrive in one write, before any reply', async () => {
    const peer = await startStubPeer({});
    try {
      const c = courier(peer.port, { cache: false });
      await c.deliver(testJob({ recipients: ['a@example.test', 'b@example.test', 'c@example.test'] }), signal());
      const chunk = peer.sessions[0].raw.map((b) => b.toString('latin1')).find((t) => t.startsWith('MAIL'));
      assert.equal(chunk, 'MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n');
    } finally {
      await peer.stop();
    }
  });
});

describe('extensions', () => {
  test('SIZE: a message over the peer\'s SIZE fails 5.3.4 and is never sent; SIZE= is declared otherwise', async () => {
    const peer = await startStubPeer({ keywords: ['PIPELINING', 'SIZE 100'] });
    try {
      const c = courier(peer.port);
      const big = await c.deliver(testJob({ content: 'x'.repeat(200) }), signal());
      assert.deepEqual([big[0].status, big[0].reply.enhanced], ['failed', '5.3.4']);
      const small = await c.deliver(testJob({ content: 'Subject: s\r\n\r\nok\r\n' }), signal());
      await c.close();
      assert.equal(small[0].status, 'delivered');
      const mails = peer.sessions.flatMap((s) => s.commands.filter((l) => l.startsWith('MAIL')));
      assert.deepEqual(mails, ['MAIL FROM:<sender@example.org> SIZE=18']);
    } finally {
      await peer.stop();
    }
  });

  test('SMTPUTF8: a UTF-8 envelope to a peer without SMTPUTF8 fails 5.6.7; with it, SMTPUTF8 is declared', async () => {
    const without = await startStubPeer({});
    const withIt = await startStubPeer({ keywords: ['PIPELINING', 'SMTPUTF8', '8BITMIME'] });
    try {
      const job = () => testJob({ smtputf8: true, bodyType: '8BITMIME', recipients: ['jörg@example.test'] });
      const a = await courier(without.port).deliver(job(), signal());
      assert.deepEqual([a[0].status, a[0].reply.enhanced], ['failed', '5.6.7']);
      assert.ok(!without.sessions[0].commands.some((l) => l.startsWith('MAIL')));
      const b = await courier(withIt.port, { cache: false }).deliver(job(), signal());
      assert.equal(b[0].status, 'delivered');
      assert.ok(withIt.sessions[0].commands.includes('MAIL FROM:<sender@example.org> BODY=8BITMIME SMTPUTF8'));
    } finally {
      await Promise.all([without.stop(), withIt.stop()]);
    }
  });

  test('DSN: a peer without DSN gets no DSN parameters, and NOTIFY=SUCCESS comes back "relayed"', async () => {
    const peer = await startStubPeer({});
    try {
      const res = await courier(peer.port, { cache: false }).deliver(testJob({ ret: 'FULL', envid: 'e', recipients: [{ address: 'a@example.test', notify: ['SUCCESS'], orcpt: { addrType: 'rfc822', address: 'a@example.test' } }, { address: 'b@example.test', notify: ['FAILURE'] }] }), signal());
      assert.deepEqual(res.map((r) => r.status), ['relayed', 'delivered']);
      assert.deepEqual(peer.sessions[0].commands.slice(1, 4), ['MAIL FROM:<sender@example.org>', 'RCPT TO:<a@example.test>', 'RCPT TO:<b@example.test>']);
    } finally {
      await peer.stop();
    }
  });

  test('8BITMIME: to a peer without it the message is sent as is by default, failed 5.6.3 with "fail"', async () => {
    const peer = await startStubPeer({ keywords: ['PIPELINING'] });
    try {
      const job = () => testJob({ bodyType: '8BITMIME', content: Buffer.from('Subject: x\r\n\r\ncaf\xe9\r\n', 'latin1') });
      const sent = await courier(peer.port, { cache: false }).deliver(job(), signal());
      assert.equal(sent[0].status, 'delivered');
      assert.equal(peer.sessions[0].messages[0].toString('latin1'), 'Subject: x\r\n\r\ncaf\xe9\r\n');
      const strict = await courier(peer.port, { cache: false, eightBitToSevenBitPeer: 'fail' }).deliver(job(), signal());
      assert.deepEqual([strict[0].status, strict[0].reply.enhanced], ['failed', '5.6.3']);
    } finally {
      await peer.stop();
    }
  });
});

describe('STARTTLS', () => {
  const { certFile, keyFile } = testCerts();
  const secureContext = tls.createSecureContext({ cert: readFileSync(certFile), key: readFileSync(keyFile) });

  test('opportunistic: STARTTLS when offered, EHLO again, the transaction inside TLS (certificate verified against the test cert)', async () => {
    const peer = await startStubPeer({ secureContext });
    try {
      const c = courier(peer.port, { tls: 'opportunistic', tlsOptions: { ca: readFileSync(certFile), servername: 'mx.example.test', rejectUnauthorized: true }, cache: false });
      const res = await c.deliver(testJob(), signal());
      assert.equal(res[0].status, 'delivered');
      const cmds = peer.sessions[0].commands;
      assert.deepEqual(cmds.slice(0, 3), ['EHLO out.example.test', 'STARTTLS', 'EHLO out.example.test']);
      const plainText = peer.sessions[0].raw.map((b) => b.toString('latin1')).join('');
      assert.ok(!plainText.includes('MAIL FROM') || cmds.indexOf('STARTTLS') < cmds.findIndex((l) => l.startsWith('MAIL')));
    } finally {
      await peer.stop();
    }
  });

  test('Security: required and not offered: deferred, and nothing of the envelope was sent in the clear', async () => {
    const peer = await startStubPeer({});
    try {
      const res = await courier(peer.port, { tls: 'required' }).deliver(testJob(), signal());
      assert.deepEqual([res[0].status, res[0].reply.enhanced], ['deferred', '4.7.10']);
      await new Promise((r) => setTimeout(r, 100)); // the QUIT we wrote on the way out
      assert.deepEqual(peer.sessions[0].commands, ['EHLO out.example.test', 'QUIT']);
    } finally {
      await peer.stop();
    }
  });

  test('opportunistic: a failed handshake (certificate not trusted) is retried once in the clear', async () => {
    const peer = await startStubPeer({ secureContext });
    try {
      const c = courier(peer.port, { tls: 'opportunistic', tlsOptions: { rejectUnauthorized: true }, cache: false });
      const res = await c.deliver(testJob(), signal());
      assert.equal(res[0].status, 'delivered');
      assert.equal(peer.sessions.length, 2);
      assert.ok(!peer.sessions[1].commands.includes('STARTTLS'));
    } finally {
      await peer.stop();
    }
  });
});

describe('the connection cache', () => {
  test('the next job to the same host reuses the session with RSET first; a session the peer dropped while idle is replaced', async () => {
    const peer = await startStubPeer({});
    try {
      const c = courier(peer.port);
      for (let i = 0; i < 3; i++) assert.equal((await c.deliver(testJob(), signal()))[0].status, 'delivered');
      assert.equal(peer.sessions.length, 1);
      const cmds = peer.sessions[0].commands.filter((l) => /^(RSET|MAIL)/.test(l)).map((l) => l.slice(0, 4));
      assert.deepEqual(cmds, ['MAIL', 'RSET', 'MAIL', 'RSET', 'MAIL']);
      await c.close();
      assert.equal(peer.sessions[0].commands.at(-1), 'QUIT');
    } finally {
      await peer.stop();
    }
  });

  test('an idle session answered 421 at RSET is replaced by a fresh connection, nothing lost', async () => {
    let n = 0;
    const peer = await startStubPeer({ onCommand: (l) => (l === 'RSET' && n++ === 0 ? '421 4.4.2 idle too long' : undefined) });
    try {
      const c = courier(peer.port);
      assert.equal((await c.deliver(testJob(), signal()))[0].status, 'delivered');
      assert.equal((await c.deliver(testJob(), signal()))[0].status, 'delivered');
      await c.close();
      assert.equal(peer.sessions.length, 2);
    } finally {
      await peer.stop();
    }
  });

  test('the idle time and the use count bound reuse', async () => {
    const peer = await startStubPeer({});
    try {
      const c = courier(peer.port, { cache: { maxUses: 2, idleMs: 10_000 } });
      for (let i = 0; i < 4; i++) await c.deliver(testJob(), signal());
      assert.equal(peer.sessions.length, 2);
      const d = courier(peer.port, { cache: { idleMs: 50 } });
      await d.deliver(testJob(), signal());
      await new Promise((r) => setTimeout(r, 300));
      await d.deliver(testJob(), signal());
      await Promise.all([c.close(), d.close()]);
      assert.equal(peer.sessions.length, 4);
    } finally {
      await peer.stop();
    }
  });
});

describe('bad peers', () => {
  const cases: [string, StubBehaviour, string][] = [
    ['hangs before the greeting', { greeting: 'hang' }, '4.4.2'],
    ['hangs after the final dot', { afterData: () => 'hang' }, '4.4.2'],
    ['closes in the middle of the data', { closeAfterDataOctets: 10 }, '4.4.2'],
    ['greets with garbage', { greeting: 'hello there, I am not SMTP' }, '4.5.0'],
    ['answers RCPT with garbage', { onCommand: (l) => (l.startsWith('RCPT') ? '2x0 what' : undefined) }, '4.5.0'],
    ['closes after MAIL without a reply', { onCommand: (l) => (l.startsWith('MAIL') ? 'close' : undefined) }, '4.4.2'],
  ];
  for (const [name, behaviour, enhanced] of cases) {
    test(`a peer that ${name}: deferred (${enhanced}), in bounded time`, async () => {
      const peer = await startStubPeer({ keywords: ['8BITMIME'], ...behaviour });
      try {
        const t0 = Date.now();
        const res = await courier(peer.port, { cache: false }).deliver(testJob({ content: 'Subject: x\r\n\r\n' + 'line of text\r\n'.repeat(50) }), signal());
        assert.deepEqual([res[0].status, res[0].reply.enhanced], ['deferred', enhanced], JSON.stringify(res[0].reply));
        assert.ok(Date.now() - t0 < 5000);
      } finally {
        await peer.stop();
      }
    });
  }

  test('a 10 MB reply line: deferred as a protocol error after at most a little reading, never buffered', async () => {
    let sentBytes = 0;
    const server = net.createServer((s) => {
      s.on('error', () => {});
      s.write('220 ');
      const block = Buffer.alloc(64 * 1024, 0x61);
      const pump = (): void => {
        while (sentBytes < 10 * 1024 * 1024 && !s.destroyed) {
          sentBytes += block.length;
          if (!s.write(block)) {
            s.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as net.AddressInfo).port;
      const res = await courier(port, { cache: false }).deliver(testJob(), signal());
      assert.deepEqual([res[0].status, res[0].reply.enhanced], ['deferred', '4.5.0']);
      assert.match(res[0].reply.lines[0], /longer than 2048/);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  test('5xx after the data fails every recipient with the peer\'s reply and Remote-MTA', async () => {
    const peer = await startStubPeer({ afterData: () => '554 5.7.1 content refused' });
    try {
      const res = await courier(peer.port).deliver(testJob({ recipients: ['a@example.test', 'b@example.test'] }), signal());
      assert.deepEqual(res.map((r) => [r.status, r.reply.code, r.reply.enhanced, r.reply.lines[0], r.remoteMta]), [
        ['failed', 554, '5.7.1', 'content refused', '127.0.0.1'],
        ['failed', 554, '5.7.1', 'content refused', '127.0.0.1'],
      ]);
    } finally {
      await peer.stop();
    }
  });

  test('a peer that stops reading in the middle of an 8 MB message: the data block timeout defers it', async () => {
    const peer = await startStubPeer({ stallInData: true });
    try {
      const t0 = Date.now();
      const big = Buffer.alloc(8 * 1024 * 1024, 'x');
      for (let i = 1000; i < big.length; i += 1000) big[i] = 0x0a;
      const res = await courier(peer.port, { cache: false, timeouts: { ...FAST, dataBlockMs: 500 } }).deliver(testJob({ content: big, chunkBytes: 64 * 1024 }), signal());
      assert.deepEqual([res[0].status, res[0].reply.enhanced], ['deferred', '4.4.2']);
      assert.match(res[0].reply.lines[0], /content/);
      assert.ok(Date.now() - t0 < 5000);
    } finally {
      await peer.stop();
    }
  });

  test('the abort signal during the greeting (a silent peer) defers at once', async () => {
    const peer = await startStubPeer({ greeting: 'hang' });
    try {
      const ac = new AbortController();
      const t0 = Date.now();
      setTimeout(() => ac.abort(), 100);
      const res = await courier(peer.port, { timeouts: { ...FAST, greetingMs: 60_000 } }).deliver(testJob(), ac.signal);
      assert.deepEqual([res[0].status, res[0].reply.enhanced], ['deferred', '4.3.2']);
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      await peer.stop();
    }
  });

  test('the abort signal (shutdown) defers an attempt stuck on a hanging peer', async () => {
    const peer = await startStubPeer({ afterData: () => 'hang' });
    try {
      const ac = new AbortController();
      const c = courier(peer.port, { timeouts: { ...FAST, dataEndMs: 60_000 } });
      setTimeout(() => ac.abort(), 200);
      const res = await c.deliver(testJob(), ac.signal);
      assert.deepEqual([res[0].status, res[0].reply.enhanced], ['deferred', '4.3.2']);
      await c.close();
    } finally {
      await peer.stop();
    }
  });
});
