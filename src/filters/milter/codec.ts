// The Sendmail milter protocol, version 6, as the MTA side speaks it: encoders for every command
// and a decoder for every response (bytes in, events out). Sans-I/O: no sockets, no timers. Ours
// because no well-kept npm milter client exists (the packages there are filter-side libraries or
// unmaintained); written from the protocol as libmilter and Postfix implement it (mfdef.h).
// Security: the decoder never throws on what a filter sends; a packet over MAX_PACKET_BYTES, an
// unknown response or a malformed one is one `error` event, after which the decoder is spent (the
// stream can no longer be framed, so nothing after it is trusted).

/** Protocol version we offer (and the one every current filter speaks). */
export const MILTER_VERSION = 6;

/** SMFIC_*: commands, MTA to filter. */
export const CMD = {
  abort: 0x41, // 'A'
  body: 0x42, // 'B'
  connect: 0x43, // 'C'
  macro: 0x44, // 'D'
  eob: 0x45, // 'E'
  helo: 0x48, // 'H'
  quitNc: 0x4b, // 'K'
  header: 0x4c, // 'L'
  mail: 0x4d, // 'M'
  eoh: 0x4e, // 'N'
  optneg: 0x4f, // 'O'
  quit: 0x51, // 'Q'
  rcpt: 0x52, // 'R'
  data: 0x54, // 'T'
  unknown: 0x55, // 'U'
} as const;

/** SMFIF_*: the actions (modifications) a filter may ask to take. */
export const ACTION = {
  addHeaders: 0x1,
  changeBody: 0x2,
  addRcpt: 0x4,
  delRcpt: 0x8,
  changeHeaders: 0x10,
  quarantine: 0x20,
  changeFrom: 0x40,
  addRcptPar: 0x80,
  setSymList: 0x100,
} as const;
/** Every action we can apply (SETSYMLIST: accepted in negotiation; we send our macro set regardless). */
export const ALL_ACTIONS = 0x1ff;

/** SMFIP_*: protocol flags. NO*: the filter does not want that command; NR_*: it sends no reply to it. */
export const PROTO = {
  noConnect: 0x1,
  noHelo: 0x2,
  noMail: 0x4,
  noRcpt: 0x8,
  noBody: 0x10,
  noHeaders: 0x20,
  noEoh: 0x40,
  nrHeader: 0x80,
  noUnknown: 0x100,
  noData: 0x200,
  skip: 0x400,
  rcptRej: 0x800,
  nrConnect: 0x1000,
  nrHelo: 0x2000,
  nrMail: 0x4000,
  nrRcpt: 0x8000,
  nrData: 0x10000,
  nrUnknown: 0x20000,
  nrEoh: 0x40000,
  nrBody: 0x80000,
  headerLeadingSpace: 0x100000,
} as const;
/** What we offer: every flag above but RCPT_REJ (we never send a recipient we refused). */
export const OFFERED_PROTOCOL = 0x1fffff & ~PROTO.rcptRej;

/** Largest body chunk in one SMFIC_BODY (libmilter's MILTER_CHUNK_SIZE). */
export const MAX_BODY_CHUNK = 65_535;
/**
 * Largest response packet we accept (length field: command byte + data). libmilter sends at most
 * 1 MiB per packet even with SMFIP_MDS_1M (replbody chunks are 65,535 bytes in practice); the
 * headroom covers the NUL-terminated strings around a value.
 */
export const MAX_PACKET_BYTES = 1024 * 1024 + 1024;

export type MilterResponse =
  | { readonly kind: 'accept' | 'continue' | 'discard' | 'reject' | 'tempfail' | 'progress' | 'skip' | 'connfail' | 'shutdown' }
  /** SMFIR_REPLYCODE: an SMTP reply, possibly multi-line, as the filter wrote it (not yet validated). */
  | { readonly kind: 'replycode'; readonly text: string }
  | { readonly kind: 'optneg'; readonly version: number; readonly actions: number; readonly protocol: number; readonly macros: ReadonlyMap<number, string> }
  | { readonly kind: 'addheader'; readonly name: string; readonly value: string }
  | { readonly kind: 'insheader' | 'chgheader'; readonly index: number; readonly name: string; readonly value: string }
  | { readonly kind: 'chgfrom'; readonly sender: string; readonly args: string }
  | { readonly kind: 'addrcpt'; readonly recipient: string; readonly args: string }
  | { readonly kind: 'delrcpt'; readonly recipient: string }
  | { readonly kind: 'replbody'; readonly data: Buffer }
  | { readonly kind: 'quarantine'; readonly reason: string }
  | { readonly kind: 'setsymlist'; readonly stage: number; readonly macros: string };

export type DecoderEvent = { readonly type: 'response'; readonly response: MilterResponse } | { readonly type: 'error'; readonly reason: string };

// --- encoding -------------------------------------------------------------------------------
// Each packet is sized first and written once into one buffer (small ones come from Node's
// shared pool): no intermediate buffer per string and no concatenation.

function packet(cmd: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(5 + data.length);
  out.writeUInt32BE(data.length + 1, 0);
  out[4] = cmd;
  data.copy(out, 5);
  return out;
}

/** Security: a NUL inside a string would end its field early (the filter would read the rest as
 *  the next field), so it becomes a space; SMTP input never carries one anyway. */
function noNul(text: string): string {
  return text.includes('\0') ? text.replace(/\0/g, ' ') : text;
}

/** Octets of `text` (NUL-free) as a NUL-terminated field. Latin1: one octet per character. */
function cstrBytes(text: string, encoding: 'utf8' | 'latin1'): number {
  return (encoding === 'latin1' ? text.length : Buffer.byteLength(text, 'utf8')) + 1;
}

/** A packet of NUL-terminated strings, after one `lead` octet when it is given (a macro's command
 *  code). Indexed loops, no intermediate arrays: this runs for most packets of a message. */
function cstrPacket(cmd: number, strings: readonly string[], encoding: 'utf8' | 'latin1' = 'utf8', lead = -1): Buffer {
  let bytes = lead < 0 ? 0 : 1;
  for (let i = 0; i < strings.length; i++) bytes += cstrBytes(noNul(strings[i]), encoding);
  const out = Buffer.allocUnsafe(5 + bytes);
  out.writeUInt32BE(bytes + 1, 0);
  out[4] = cmd;
  let at = 5;
  if (lead >= 0) out[at++] = lead;
  for (let i = 0; i < strings.length; i++) {
    at += out.write(noNul(strings[i]), at, encoding);
    out[at++] = 0;
  }
  return out;
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

export function encodeOptneg(version: number, actions: number, protocol: number): Buffer {
  return packet(CMD.optneg, Buffer.concat([u32(version), u32(actions), u32(protocol)]));
}

/** SMFIC_MACRO for the command `forCmd`. The command code is one byte, not NUL-terminated (rspamd
 *  drops a connection that sends "C\0"); names are "j" or "{daemon_name}". */
export function encodeMacros(forCmd: number, macros: readonly (readonly [string, string])[]): Buffer {
  const strings: string[] = [];
  for (let i = 0; i < macros.length; i++) strings.push(macros[i][0], macros[i][1]);
  return cstrPacket(CMD.macro, strings, 'utf8', forCmd);
}

/** Address family of SMFIC_CONNECT: '4', '6', 'L' (a UNIX socket), 'U' (unknown: no port, no address). */
export type ConnectFamily = '4' | '6' | 'L' | 'U';

export function encodeConnect(hostname: string, family: ConnectFamily, port: number, address: string): Buffer {
  const host = noNul(hostname);
  const hostBytes = cstrBytes(host, 'utf8');
  if (family === 'U') {
    const out = Buffer.allocUnsafe(5 + hostBytes + 1);
    out.writeUInt32BE(hostBytes + 2, 0);
    out[4] = CMD.connect;
    out.write(host, 5, 'utf8');
    out[4 + hostBytes] = 0;
    out[5 + hostBytes] = 0x55; // 'U'
    return out;
  }
  const addr = noNul(address);
  const bytes = hostBytes + 3 + cstrBytes(addr, 'utf8');
  const out = Buffer.allocUnsafe(5 + bytes);
  out.writeUInt32BE(bytes + 1, 0);
  out[4] = CMD.connect;
  let at = 5 + out.write(host, 5, 'utf8');
  out[at++] = 0;
  out[at++] = family.charCodeAt(0);
  out.writeUInt16BE(port & 0xffff, at);
  at += 2;
  at += out.write(addr, at, 'utf8');
  out[at] = 0;
  return out;
}

export function encodeHelo(name: string): Buffer {
  return cstrPacket(CMD.helo, [name]);
}

/** SMFIC_MAIL / SMFIC_RCPT: the address in angle brackets, then each ESMTP parameter. */
export function encodeMail(args: readonly string[]): Buffer {
  return cstrPacket(CMD.mail, args);
}

export function encodeRcpt(args: readonly string[]): Buffer {
  return cstrPacket(CMD.rcpt, args);
}

export function encodeData(): Buffer {
  return packet(CMD.data);
}

/** A header field as the message holds it: `name` and `value` are octet strings (one latin1
 *  character per octet, as message/header.ts parses them), sent as those octets, so an 8-bit
 *  field reaches a signing filter exactly as it is stored. */
export function encodeHeader(name: string, value: string): Buffer {
  return cstrPacket(CMD.header, [name, value], 'latin1');
}

export function encodeEoh(): Buffer {
  return packet(CMD.eoh);
}

/** One SMFIC_BODY packet; `chunk` must be at most MAX_BODY_CHUNK octets (bodyPackets splits). */
export function encodeBody(chunk: Buffer): Buffer {
  if (chunk.length > MAX_BODY_CHUNK) throw new RangeError(`body chunk of ${chunk.length} octets is over ${MAX_BODY_CHUNK}`);
  return packet(CMD.body, chunk);
}

/**
 * The 5-octet head of one SMFIC_BODY packet whose data, `bytes` octets (at most MAX_BODY_CHUNK),
 * follows in the same write as the pieces it is made of: the body is never copied into a packet.
 */
export function encodeBodyHead(bytes: number): Buffer {
  if (bytes > MAX_BODY_CHUNK) throw new RangeError(`body chunk of ${bytes} octets is over ${MAX_BODY_CHUNK}`);
  const out = Buffer.allocUnsafe(5);
  out.writeUInt32BE(bytes + 1, 0);
  out[4] = CMD.body;
  return out;
}

/** A buffer of body octets as SMFIC_BODY packets of at most MAX_BODY_CHUNK octets each. */
export function bodyPackets(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; at += MAX_BODY_CHUNK) out.push(packet(CMD.body, data.subarray(at, at + MAX_BODY_CHUNK)));
  return out;
}

export function encodeEob(): Buffer {
  return packet(CMD.eob);
}

export function encodeAbort(): Buffer {
  return packet(CMD.abort);
}

export function encodeQuit(): Buffer {
  return packet(CMD.quit);
}

/** SMFIC_QUIT_NC: end this conversation, keep the connection for a new one (we do not reuse that way). */
export function encodeQuitNc(): Buffer {
  return packet(CMD.quitNc);
}

// --- decoding -------------------------------------------------------------------------------

/** The NUL-terminated strings of `data`; null when the last one is not terminated. */
function cstrings(data: Buffer): string[] | null {
  if (data.length === 0 || data[data.length - 1] !== 0) return null;
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < data.length; i++) {
    if (data[i] === 0) {
      out.push(data.toString('utf8', start, i));
      start = i + 1;
    }
  }
  return out;
}

const SIMPLE: Record<number, MilterResponse['kind']> = {
  0x61: 'accept', // 'a'
  0x63: 'continue', // 'c'
  0x64: 'discard', // 'd'
  0x72: 'reject', // 'r'
  0x74: 'tempfail', // 't'
  0x70: 'progress', // 'p'
  0x73: 'skip', // 's'
  0x66: 'connfail', // 'f'
  0x34: 'shutdown', // '4'
};

/** One response packet's command and data -> the response, or why it is malformed. */
export function parseResponse(cmd: number, data: Buffer): MilterResponse | string {
  const simple = SIMPLE[cmd];
  if (simple !== undefined) {
    // The protocol defines these empty: octets after one mean the two sides frame differently.
    return data.length === 0 ? ({ kind: simple } as MilterResponse) : `response '${String.fromCharCode(cmd)}' carries ${data.length} unexpected octets`;
  }
  const name = String.fromCharCode(cmd);
  switch (name) {
    case 'y': {
      const s = cstrings(data);
      if (s === null || s.length !== 1) return 'SMFIR_REPLYCODE is not one NUL-terminated string';
      return { kind: 'replycode', text: s[0] };
    }
    case 'O': {
      if (data.length < 12) return `SMFIC_OPTNEG reply of ${data.length} octets (needs 12)`;
      const macros = new Map<number, string>();
      // Optional since version 6: (stage uint32, NUL-terminated macro list)* for SETSYMLIST.
      let at = 12;
      while (at < data.length) {
        if (data.length - at < 5) return 'SMFIC_OPTNEG reply: truncated macro list';
        const stage = data.readUInt32BE(at);
        const end = data.indexOf(0, at + 4);
        if (end < 0) return 'SMFIC_OPTNEG reply: macro list not NUL-terminated';
        macros.set(stage, data.toString('latin1', at + 4, end));
        at = end + 1;
      }
      return { kind: 'optneg', version: data.readUInt32BE(0), actions: data.readUInt32BE(4), protocol: data.readUInt32BE(8), macros };
    }
    case 'h': {
      const s = cstrings(data);
      if (s === null || s.length !== 2) return 'SMFIR_ADDHEADER is not a name and a value';
      return { kind: 'addheader', name: s[0], value: s[1] };
    }
    case 'i':
    case 'm': {
      if (data.length < 4) return `${name === 'i' ? 'SMFIR_INSHEADER' : 'SMFIR_CHGHEADER'} has no index`;
      const s = cstrings(data.subarray(4));
      if (s === null || s.length !== 2) return `${name === 'i' ? 'SMFIR_INSHEADER' : 'SMFIR_CHGHEADER'} is not an index, a name and a value`;
      return { kind: name === 'i' ? 'insheader' : 'chgheader', index: data.readUInt32BE(0), name: s[0], value: s[1] };
    }
    case 'e': {
      const s = cstrings(data);
      if (s === null || s.length < 1 || s.length > 2) return 'SMFIR_CHGFROM is not a sender and optional parameters';
      return { kind: 'chgfrom', sender: s[0], args: s[1] ?? '' };
    }
    case '+':
    case '2': {
      const s = cstrings(data);
      if (s === null || s.length < 1 || s.length > 2 || (name === '+' && s.length !== 1)) return `${name === '+' ? 'SMFIR_ADDRCPT' : 'SMFIR_ADDRCPT_PAR'} is malformed`;
      return { kind: 'addrcpt', recipient: s[0], args: s[1] ?? '' };
    }
    case '-': {
      const s = cstrings(data);
      if (s === null || s.length !== 1) return 'SMFIR_DELRCPT is not one recipient';
      return { kind: 'delrcpt', recipient: s[0] };
    }
    case 'b':
      return { kind: 'replbody', data: Buffer.from(data) };
    case 'q': {
      const s = cstrings(data);
      if (s === null || s.length !== 1) return 'SMFIR_QUARANTINE is not one reason';
      return { kind: 'quarantine', reason: s[0] };
    }
    case 'l': {
      if (data.length < 5) return 'SMFIR_SETSYMLIST is truncated';
      const s = cstrings(data.subarray(4));
      if (s === null || s.length !== 1) return 'SMFIR_SETSYMLIST is not a stage and a list';
      return { kind: 'setsymlist', stage: data.readUInt32BE(0), macros: s[0] };
    }
    default:
      return `unknown response code 0x${cmd.toString(16).padStart(2, '0')}`;
  }
}

/** Why a packet's length field cannot be a response's, or null: it has at least its code, within the cap. */
function badLength(length: number): string | null {
  if (length === 0) return 'packet of length 0 (no response code)';
  if (length > MAX_PACKET_BYTES) return `packet of ${length} octets is over the ${MAX_PACKET_BYTES}-octet cap`;
  return null;
}

/**
 * Frames a filter's byte stream into responses. The bytes given to feed() are not kept: a
 * caller may reuse their memory once feed() returns (the link reads into one shared buffer).
 * Whole packets are parsed where they lie; only an incomplete packet's octets are copied, into
 * chunks that are joined once the packet is complete (a large packet in many reads is not rescanned).
 */
export class MilterDecoder {
  readonly #chunks: Buffer[] = [];
  #buffered = 0;
  #isSpent = false;

  get isSpent(): boolean {
    return this.#isSpent;
  }

  /** Octets received but not yet part of a complete packet. */
  get buffered(): number {
    return this.#buffered;
  }

  feed(bytes: Buffer): DecoderEvent[] {
    const out: DecoderEvent[] = [];
    if (this.#isSpent) return out;
    let at = 0;
    if (this.#buffered > 0) {
      // Complete the packet begun in earlier reads (its header may be split too).
      if (bytes.length > 0) {
        this.#chunks.push(Buffer.from(bytes));
        this.#buffered += bytes.length;
      }
      if (this.#buffered < 4) return out;
      const length = this.#peekLength();
      const bad = badLength(length);
      if (bad !== null) return this.#fail(out, bad);
      if (this.#buffered < 4 + length) return out;
      const joined = this.#chunks.length === 1 ? this.#chunks[0] : Buffer.concat(this.#chunks, this.#buffered);
      // What followed that packet in this read is parsed below, where it lies.
      at = bytes.length - (this.#buffered - 4 - length);
      this.#chunks.length = 0;
      this.#buffered = 0;
      const parsed = parseResponse(joined[4], joined.subarray(5, 4 + length));
      if (typeof parsed === 'string') return this.#fail(out, parsed);
      out.push({ type: 'response', response: parsed });
    }
    while (bytes.length - at >= 4) {
      const length = bytes.readUInt32BE(at);
      const bad = badLength(length);
      if (bad !== null) return this.#fail(out, bad);
      if (bytes.length - at < 4 + length) break;
      const parsed = parseResponse(bytes[at + 4], bytes.subarray(at + 5, at + 4 + length));
      if (typeof parsed === 'string') return this.#fail(out, parsed);
      out.push({ type: 'response', response: parsed });
      at += 4 + length;
    }
    if (at < bytes.length) {
      this.#chunks.push(Buffer.from(bytes.subarray(at)));
      this.#buffered = bytes.length - at;
    }
    return out;
  }

  #fail(out: DecoderEvent[], reason: string): DecoderEvent[] {
    this.#isSpent = true;
    this.#chunks.length = 0;
    this.#buffered = 0;
    out.push({ type: 'error', reason });
    return out;
  }

  #peekLength(): number {
    const first = this.#chunks[0];
    if (first.length >= 4) return first.readUInt32BE(0);
    const head = Buffer.alloc(4);
    let n = 0;
    for (const c of this.#chunks) {
      const take = Math.min(4 - n, c.length);
      c.copy(head, n, 0, take);
      n += take;
      if (n === 4) break;
    }
    return head.readUInt32BE(0);
  }
}
