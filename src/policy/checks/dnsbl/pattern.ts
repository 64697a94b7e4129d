// DNS-list answer patterns, postscreen style: four dot-separated octets, each a number, a
// `[a..b]` range or a `[a;b;c]` list whose items are numbers or ranges (`[1;3..5]`). A leaf:
// the configuration loader checks `dnsbl[].answers` with this parser, so what it accepts is
// exactly what the check runs, without loading the check. Pure.

import { ipv4Octets, isIPv4 } from '../../../net/ip.ts';

type OctetSet = readonly (readonly [number, number])[];

export function parseAnswerPattern(text: string): { ok: true; test: (address: string) => boolean } | { ok: false; problem: string } {
  const parts = text.split('.');
  // A range "[2..11]" contains dots: re-join the pieces between brackets first.
  const octets: string[] = [];
  for (let i = 0; i < parts.length; i++) {
    let part = parts[i];
    if (part.startsWith('[')) {
      while (!part.endsWith(']') && i + 1 < parts.length) part += `.${parts[++i]}`;
    }
    octets.push(part);
  }
  if (octets.length !== 4) return { ok: false, problem: `answer pattern "${text}" needs four octets separated by dots, found ${octets.length}` };
  const sets: OctetSet[] = [];
  for (let i = 0; i < 4; i++) {
    const parsed = parseOctet(octets[i]);
    if (typeof parsed === 'string') return { ok: false, problem: `answer pattern "${text}", octet ${i + 1} "${octets[i]}": ${parsed}` };
    sets.push(parsed);
  }
  return {
    ok: true,
    test: (address) => {
      if (!isIPv4(address)) return false;
      const values = ipv4Octets(address);
      return values.every((v, i) => sets[i].some(([lo, hi]) => v >= lo && v <= hi));
    },
  };
}

/** The ranges an octet pattern allows, or why it is wrong. */
function parseOctet(text: string): OctetSet | string {
  if (!text.startsWith('[')) {
    const n = parseNumber(text);
    return typeof n === 'string' ? n : [[n, n]];
  }
  if (!text.endsWith(']')) return 'a "[" without its "]"';
  const inner = text.slice(1, -1);
  if (inner === '') return 'an empty []';
  const out: (readonly [number, number])[] = [];
  for (const item of inner.split(';')) {
    const bounds = item.split('..');
    if (bounds.length > 2) return `"${item}" is not a number or an a..b range`;
    const lo = parseNumber(bounds[0]);
    if (typeof lo === 'string') return lo;
    const hi = bounds.length === 2 ? parseNumber(bounds[1]) : lo;
    if (typeof hi === 'string') return hi;
    if (lo > hi) return `the range [${lo}..${hi}] is empty (its start is above its end)`;
    out.push([lo, hi]);
  }
  return out;
}

function parseNumber(text: string): number | string {
  if (!/^[0-9]{1,3}$/.test(text)) return `"${text}" is not a number, an [a..b] range or an [a;b;c] list`;
  const n = Number(text);
  return n > 255 ? `${n} is above 255` : n;
}
