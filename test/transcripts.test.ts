// Every transcript in test/transcripts runs through the sans-I/O core: whole, byte by byte, and
// in random chunkings (fixed seed). The same files run over a real socket in integration/.

import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import fc from 'fast-check';
import { runCore } from './helpers/core-runner.ts';
import { loadTranscript } from './helpers/transcript.ts';

const dir = new URL('./transcripts/', import.meta.url).pathname;
const files = readdirSync(dir).filter((f) => f.endsWith('.txt')).sort();

for (const file of files) {
  const t = loadTranscript(dir + file);
  test(`transcript ${file} (core, whole writes)`, async () => {
    await runCore(t);
  });
  test(`transcript ${file} (core, byte by byte)`, async () => {
    await runCore(t, (b) => Array.from(b, (x) => Buffer.from([x])));
  });
  test(`transcript ${file} (core, random chunkings)`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 32 }), async (sizes) => {
        let k = 0;
        await runCore(t, (b) => {
          const out: Buffer[] = [];
          for (let i = 0; i < b.length; ) {
            const n = sizes[k++ % sizes.length];
            out.push(b.subarray(i, i + n));
            i += n;
          }
          return out;
        });
      }),
      { seed: 4242, numRuns: 40 },
    );
  });
}
