// What a spam scanner's answer (spamd's score, rspamd's score and action) means for a message:
// the operator's thresholds, or the scanner's own action when configured so, give one of clean,
// tagged, tempfail, reject; and the X-Spam-* header fields accepted mail gets, replacing any the
// message came with (a sender must not be able to pre-label its mail "X-Spam-Status: No"). Pure.
// docs/filters.md "SpamAssassin" and "rspamd".

import type { HeaderEdit } from '../message/edits.ts';
import type { HeaderField } from '../message/header.ts';

export type SpamThresholds = {
  /** At or above: accepted with X-Spam-Status: Yes and X-Spam-Flag: YES. */
  readonly addHeaderScore: number;
  /** At or above: 451 (soft reject); null: never. */
  readonly tempfailScore: number | null;
  /** At or above: 554; null: never. */
  readonly rejectScore: number | null;
  /** The scanner's own action decides (rspamd's "action"), when it gave one. */
  readonly useScannerAction: boolean;
};

export type SpamFinding = {
  readonly score: number;
  /** The scanner's own spam threshold, when it says (spamd's required score). */
  readonly required: number | null;
  /** rspamd's action: "no action", "greylist", "add header", "rewrite subject", "soft reject", "reject". */
  readonly action: string | null;
  /** Rule names, for the log and X-Spam-Status tests=. */
  readonly symbols: readonly string[];
};

export type SpamDecision = 'clean' | 'tagged' | 'tempfail' | 'reject';

/** The scanner's actions as ours; an action we do not know falls back to the thresholds. */
const SCANNER_ACTIONS: Readonly<Record<string, SpamDecision>> = {
  'no action': 'clean',
  'add header': 'tagged',
  'rewrite subject': 'tagged',
  greylist: 'tempfail',
  'soft reject': 'tempfail',
  reject: 'reject',
};

export function decide(f: SpamFinding, t: SpamThresholds): SpamDecision {
  if (t.useScannerAction && f.action !== null) {
    const own = SCANNER_ACTIONS[f.action];
    if (own !== undefined) return own;
  }
  if (t.rejectScore !== null && f.score >= t.rejectScore) return 'reject';
  if (t.tempfailScore !== null && f.score >= t.tempfailScore) return 'tempfail';
  return f.score >= t.addHeaderScore ? 'tagged' : 'clean';
}

/** The fields this module writes; the message's own copies are removed. */
export const SPAM_FIELDS = ['X-Spam-Flag', 'X-Spam-Status', 'X-Spam-Score', 'X-Spam-Action'] as const;
const MAX_SYMBOLS = 100;

/** A score as the headers show it: at most two decimals. */
export function formatScore(score: number): string {
  const r = Math.round(score * 100) / 100;
  return Number.isInteger(r) ? r.toFixed(1) : String(r);
}

/** A rule name that can go into a field: printable ASCII without commas or white space. */
function cleanSymbol(name: string): string {
  return name.replace(/[^\x21-\x2b\x2d-\x7e]/g, '').slice(0, 100);
}

/**
 * The header edits for accepted mail: delete the message's own X-Spam-* fields, then add ours
 * (above the first field: X-Spam-Flag first when tagged, then X-Spam-Status, X-Spam-Score and,
 * with an action, X-Spam-Action).
 */
export function spamHeaderEdits(fields: readonly HeaderField[], f: SpamFinding, decision: SpamDecision, t: SpamThresholds, filter: string): HeaderEdit[] {
  const edits: HeaderEdit[] = [];
  // Edits apply in check order, and the other spam check (spamd and rspamd both configured) may
  // have added one of each field above the message's own by the time ours apply: one delete more
  // than the message has takes it too (a delete with nothing left to delete does nothing), so
  // the last scanner's fields are the ones stored, and no forged one survives either way.
  for (const name of SPAM_FIELDS) {
    const lower = name.toLowerCase();
    const n = fields.filter((x) => x.name.toLowerCase() === lower).length + 1;
    for (let i = 0; i < n; i++) edits.push({ op: 'delete', name, index: 1 });
  }
  const isSpam = decision !== 'clean';
  const required = t.useScannerAction && f.required !== null ? f.required : t.addHeaderScore;
  const symbols = f.symbols.slice(0, MAX_SYMBOLS).map(cleanSymbol).filter((s) => s !== '');
  const added = [
    ...(isSpam ? ['X-Spam-Flag: YES'] : []),
    `X-Spam-Status: ${isSpam ? 'Yes' : 'No'}, score=${formatScore(f.score)} required=${formatScore(required)} tests=${symbols.length === 0 ? 'none' : symbols.join(',')} scanner=${filter}`,
    `X-Spam-Score: ${formatScore(f.score)}`,
    ...(f.action !== null ? [`X-Spam-Action: ${f.action.replace(/[^a-z ]/g, '').slice(0, 40)}`] : []),
  ];
  // Each add goes above the first field: add them last to first.
  for (const field of added.reverse()) edits.push({ op: 'add', field });
  return edits;
}

/** One line for the log and for an Authentication-Results style summary, e.g. "spamd score=7.2 required=5 decision=tagged". */
export function spamSummary(filter: string, f: SpamFinding, decision: SpamDecision): string {
  return `${filter} score=${formatScore(f.score)}${f.required !== null ? ` required=${formatScore(f.required)}` : ''}${f.action !== null ? ` action="${f.action}"` : ''} decision=${decision}`;
}
