// Message assembly: from what the session accepted to what the spool stores. Pure: no clock, no
// I/O; time and ids come in as values. Two steps, so content checks sit between them:
// prepareMessage (our trace fields above the message, forged Authentication-Results renamed) and
// finishMessage (the content checks' edits applied, in order, in this one place).
// RFC 5321 4.4 (Received first), RFC 7208 9.1 / RFC 8601 2.1 (policy fields above Received),
// RFC 8601 5 (forged Authentication-Results), RFC 5322 2.2 (fields).

import type { AcceptedMessage, AcceptedRecipient, BodyRest } from './accepted.ts';
import { renameForgedAuthResults } from './auth-results.ts';
import type { HeaderEdit, MessageEdits, RecipientEdit } from './edits.ts';
import { formatFields, headerSection, parseFields, splitAt, type HeaderField } from './header.ts';
import { foldField, unfold } from './header-field.ts';
import { formatReceived } from './received.ts';

export type AssembleInput = {
  readonly queueId: string;
  readonly sessionId: string;
  readonly nowMs: number;
  /** Our name: in Received, and the authserv-id whose forgeries are renamed. */
  readonly hostname: string;
  readonly client: { readonly address: string; readonly port: number; readonly heloName: string | null; readonly isEsmtp: boolean; readonly isTls: boolean };
  readonly reversePath: string;
  readonly bodyType: AcceptedMessage['bodyType'];
  readonly smtputf8: boolean;
  readonly ret?: 'FULL' | 'HDRS';
  readonly envid?: string;
  readonly recipients: readonly AcceptedRecipient[];
  /** Header fields (no CRLF) the policy checks asked for, placed above our Received field. */
  readonly addedFields: readonly string[];
  /** The canonical content as received (CRLF lines, dot-unstuffed): in memory, or its header
   *  section in memory and the rest (`bytes` octets) in the transaction's body file. */
  readonly content: { readonly kind: 'memory'; readonly chunks: readonly Buffer[] } | { readonly kind: 'spilled'; readonly header: Buffer; readonly bytes: number };
};

/** The message between the two steps: what content checks see. */
export type PreparedMessage = {
  readonly input: AssembleInput;
  /** Our fields, Received, and the message's header section (renamed where forged). */
  readonly head: readonly Buffer[];
  /** Whether the message's header section ends in an empty line (a body may follow). */
  readonly hasSeparator: boolean;
  readonly rest: BodyRest;
  readonly size: number;
};

function restBytes(rest: BodyRest): number {
  return rest.kind === 'memory' ? bytesOf(rest.chunks) : rest.bytes;
}

function bytesOf(chunks: readonly Buffer[]): number {
  let n = 0;
  for (const c of chunks) n += c.length;
  return n;
}

export function prepareMessage(input: AssembleInput): PreparedMessage {
  const received = Buffer.from(
    formatReceived({
      heloName: input.client.heloName,
      clientAddress: input.client.address,
      hostname: input.hostname,
      isEsmtp: input.client.isEsmtp,
      isTls: input.client.isTls,
      isUtf8: input.smtputf8,
      queueId: input.queueId,
      sessionId: input.sessionId,
      recipients: input.recipients.map((r) => r.address),
      nowMs: input.nowMs,
    }),
  );
  // Security: an incoming Authentication-Results field that claims our name is renamed
  // (RFC 8601 5), so nobody behind us trusts a forged "spf=pass".
  const source = input.content;
  const content = renameForgedAuthResults(source.kind === 'memory' ? source.chunks : [source.header], input.hostname);
  const section = headerSection(content);
  const split = splitAt(content, section.bytes);
  const header = split.head;
  const rest: BodyRest = source.kind === 'memory' ? { kind: 'memory', chunks: split.rest } : { kind: 'spilled', offset: 0, bytes: source.bytes };
  const ours = input.addedFields.length === 0 ? [received] : [Buffer.from(input.addedFields.map((h) => `${h}\r\n`).join('')), received];
  const head = [...ours, ...header];
  return { input, head, hasSeparator: section.hasSeparator, rest, size: bytesOf(head) + restBytes(rest) };
}

/** Each prepared message's parsed fields: the content stage reads them and finishMessage edits
 *  them, and nothing changes a prepared message's head, so it is parsed once, not twice. */
const parsedHeads = new WeakMap<PreparedMessage, readonly HeaderField[]>();

/** The fields of the prepared message, as content checks see them (our fields first). */
export function preparedFields(message: PreparedMessage): readonly HeaderField[] {
  let fields = parsedHeads.get(message);
  if (fields === undefined) {
    fields = parseFields(Buffer.concat(message.head as Buffer[]));
    parsedHeads.set(message, fields);
  }
  return fields;
}

/**
 * The message as stored: every check's edits applied in order. null when the edits removed
 * every recipient (nothing is left to deliver; the message is dropped, logged by the caller).
 */
export function finishMessage(message: PreparedMessage, edits: readonly MessageEdits[] = []): AcceptedMessage | null {
  const input = message.input;
  let head = message.head;
  let recipients = input.recipients;
  let quarantine: string | undefined;
  const headerEdits = edits.flatMap((e) => e.headers ?? []);
  if (headerEdits.length > 0) {
    let fields = preparedFields(message);
    for (const edit of headerEdits) fields = applyHeaderEdit(fields, edit, input.smtputf8);
    head = [formatFields(fields, message.hasSeparator)];
  }
  let reversePath = input.reversePath;
  let rest = message.rest;
  for (const e of edits) {
    // Discarded: accepted and dropped (the caller answers 250 and logs it).
    if (e.discard === true) return null;
    for (const r of e.recipients ?? []) recipients = applyRecipientEdit(recipients, r);
    if (e.quarantine !== undefined) quarantine ??= e.quarantine;
    if (e.sender !== undefined && (e.sender === '' || RECIPIENT.test(e.sender))) reversePath = e.sender;
    if (e.body !== undefined) {
      // Security: a replaced body is stored canonical (every line end CRLF, the last line ended),
      // as a received one is, so no bare CR or LF reaches a next hop from a filter either.
      rest = { kind: 'memory', chunks: canonicalBody(e.body) };
      if (!message.hasSeparator && head.length > 0) head = [...head, Buffer.from('\r\n')];
    }
  }
  if (recipients.length === 0) return null;
  return {
    queueId: input.queueId,
    sessionId: input.sessionId,
    receivedAtMs: input.nowMs,
    client: { address: input.client.address, port: input.client.port, heloName: input.client.heloName, isTls: input.client.isTls },
    reversePath,
    bodyType: input.bodyType,
    smtputf8: input.smtputf8,
    ...(input.ret !== undefined ? { ret: input.ret } : {}),
    ...(input.envid !== undefined ? { envid: input.envid } : {}),
    recipients,
    ...(quarantine !== undefined ? { quarantine } : {}),
    head,
    rest,
    size: bytesOf(head) + restBytes(rest),
  };
}


/** Never changes `fields` (the prepared message's parsed fields are shared): a new list or `fields` itself. */
function applyHeaderEdit(fields: readonly HeaderField[], edit: HeaderEdit, isUtf8: boolean): readonly HeaderField[] {
  if (edit.op === 'add') {
    const [parsed] = parseFields(Buffer.from(`${fieldOctets(edit.field, isUtf8)}\r\n`, 'latin1'));
    return parsed === undefined ? fields : [parsed, ...fields];
  }
  if (edit.op === 'insert') {
    const parsed = parseFields(Buffer.from(`${insertedOctets(edit.field, isUtf8)}\r\n`, 'latin1'));
    if (parsed.length !== 1 || parsed[0].name === '') return fields;
    const at = Math.max(0, Math.min(fields.length, Math.floor(edit.index)));
    return [...fields.slice(0, at), parsed[0], ...fields.slice(at)];
  }
  const name = edit.name.toLowerCase();
  let seen = 0;
  const at = fields.findIndex((f) => f.name.toLowerCase() === name && ++seen === edit.index);
  if (at < 0) return fields;
  const out = [...fields];
  if (edit.op === 'delete') out.splice(at, 1);
  else {
    const raw = fieldOctets(`${fields[at].name}: ${edit.value}`, isUtf8);
    out[at] = { name: fields[at].name, value: unfold(raw.slice(fields[at].name.length + 1)), raw };
  }
  return out;
}

/**
 * A field a check adds or changes, as the octets to store (one latin1 character per octet, as
 * the parsed fields are). Security: foldField leaves no CR or LF but folds; the text is then
 * encoded as UTF-8 in an SMTPUTF8 message (whose multi-octet sequences never hold a CR or LF)
 * and reduced to ASCII otherwise, so no character of the text can become a line end.
 */
function fieldOctets(text: string, isUtf8: boolean): string {
  const folded = foldField(text);
  return isUtf8 ? Buffer.from(folded, 'utf8').toString('latin1') : folded.replace(/[^\t\r\n\x20-\x7e]/g, '?');
}

/**
 * A field a filter inserts, as octets: its own folding kept when every line end is CRLF followed
 * by white space, no line is empty or over 998 octets, and nothing else is a control character
 * but tab; else refolded like any other field (fieldOctets).
 */
function insertedOctets(text: string, isUtf8: boolean): string {
  const crlf = text.replace(/\r?\n/g, '\r\n');
  const octets = isUtf8 ? Buffer.from(crlf, 'utf8').toString('latin1') : crlf.replace(/[^\t\r\n\x20-\x7e]/g, '?');
  const lines = octets.split('\r\n');
  const isValid =
    !/[\x00-\x08\x0a-\x1f\x7f]/.test(lines.join('')) &&
    lines.every((l, i) => l.length <= 998 && (i === 0 ? l.trim() !== '' : /^[ \t]+\S/.test(l)));
  return isValid ? octets : fieldOctets(text, isUtf8);
}

/** A body as stored: bare CR and bare LF become CRLF, and a last line without its end gets one. */
function canonicalBody(chunks: readonly Buffer[]): Buffer[] {
  const text = Buffer.concat(chunks as Buffer[]).toString('latin1');
  if (text === '') return [];
  let out = text.replace(/\r\n|\r|\n/g, '\r\n');
  if (!out.endsWith('\r\n')) out += '\r\n';
  return [Buffer.from(out, 'latin1')];
}

/** An address a check adds: local@domain, printable, no space or angle brackets, within RFC 5321 4.5.3.1. */
const RECIPIENT = /^[^\s<>@\x00-\x1f\x7f]{1,64}@[^\s<>@\x00-\x1f\x7f]{1,255}$/u;

/** RFC 5321 2.4: the local part is case-sensitive, the domain is not. */
function sameAddress(a: string, b: string): boolean {
  const at = a.lastIndexOf('@');
  const bt = b.lastIndexOf('@');
  return a.slice(0, at) === b.slice(0, bt) && a.slice(at).toLowerCase() === b.slice(bt).toLowerCase();
}

function applyRecipientEdit(recipients: readonly AcceptedRecipient[], edit: RecipientEdit): readonly AcceptedRecipient[] {
  const has = recipients.some((r) => sameAddress(r.address, edit.address));
  if (edit.op === 'add') return has || !RECIPIENT.test(edit.address) ? recipients : [...recipients, { address: edit.address }];
  return recipients.filter((r) => !sameAddress(r.address, edit.address));
}
