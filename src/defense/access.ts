// The static access lists ([access]): networks that are never limited (allow) and networks
// refused with 554 at connect (block, and the CIDRs of block_file, one per line, # comments).
// The file is read once, when the configuration is loaded and checked (check-config names a bad
// line by its number); the matchers are node:net BlockLists from net/cidr.ts. No I/O at match time.

import { readFileSync } from 'node:fs';
import { isInNetworks, networkList, parseCidr, type NetworkList } from '../net/cidr.ts';

export type AccessLists = { isAllowed(address: string): boolean; isBlocked(address: string): boolean };

/** The largest block file read: far beyond any hand-kept list; a wrong path (a log) is refused. */
export const MAX_BLOCK_FILE_BYTES = 16 * 2 ** 20;

/** The CIDRs of a block file's text, or the problems, each naming its line. */
export function parseBlockFile(text: string): { cidrs: string[]; problems: string[] } {
  const cidrs: string[] = [];
  const problems: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/#.*$/, '').trim();
    if (line === '') continue;
    const parsed = parseCidr(line);
    if ('kind' in parsed) {
      problems.push(`line ${i + 1}: "${line.slice(0, 80)}" ${parsed.kind === 'host-bits' ? `has host bits set (did you mean ${parsed.network}/${parsed.prefix}?)` : 'is not an IP address or CIDR network'}`);
      continue;
    }
    cidrs.push(`${parsed.address}/${parsed.prefix}`);
  }
  return { cidrs, problems };
}

/** Reads a block file; throws an Error naming the file and its bad lines. */
export function readBlockFile(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  if (Buffer.byteLength(text) > MAX_BLOCK_FILE_BYTES) throw new Error(`${file}: larger than ${MAX_BLOCK_FILE_BYTES} bytes`);
  const { cidrs, problems } = parseBlockFile(text);
  if (problems.length > 0) throw new Error(`${file}: ${problems.slice(0, 20).join('; ')}`);
  return cidrs;
}

export function accessLists(allow: readonly string[], block: readonly string[]): AccessLists {
  const allowed: NetworkList = networkList(allow);
  const blocked: NetworkList = networkList(block);
  const hasBlock = block.length > 0;
  return {
    isAllowed: (address) => isInNetworks(allowed, address),
    isBlocked: (address) => hasBlock && isInNetworks(blocked, address),
  };
}
