// A DeliveryJob for the courier tests: content from a buffer, served in chunks of a given size
// (so the encoder sees line ends cut between reads), and recipients from plain addresses.

import type { DeliveryJob, DeliveryRecipient } from '../../src/delivery/types.ts';

export function testJob(over: Partial<Omit<DeliveryJob, 'content' | 'recipients'>> & { content?: Buffer | string; recipients?: (string | Omit<DeliveryRecipient, 'index'>)[]; chunkBytes?: number } = {}): DeliveryJob {
  const content = Buffer.isBuffer(over.content) ? over.content : Buffer.from(over.content ?? 'Subject: test\r\n\r\nhello\r\n', 'latin1');
  const chunkBytes = over.chunkBytes ?? 7;
  const recipients = (over.recipients ?? ['alice@example.test']).map((r, index) => (typeof r === 'string' ? { index, address: r } : { index, ...r }));
  const { content: _c, recipients: _r, chunkBytes: _k, ...rest } = over;
  return {
    queueId: 'Q1',
    reversePath: 'sender@example.org',
    bodyType: '7BIT',
    smtputf8: false,
    size: content.length,
    ...rest,
    recipients,
    async *content() {
      for (let i = 0; i < content.length; i += chunkBytes) yield content.subarray(i, i + chunkBytes);
    },
  };
}
