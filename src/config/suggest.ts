// Suggestions for names the configuration does not know: the nearest known key or section
// ("listne" -> "listen", "maxMessageBytes" -> "max_message_bytes"). Pure string work.

/** Optimal string alignment distance: Levenshtein plus adjacent transpositions ("listne" -> "listen" is 1). */
function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    rows.push([i]);
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        rows[i].push(j);
        continue;
      }
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2][j - 2] + 1);
      rows[i].push(d);
    }
  }
  return rows[a.length][b.length];
}

/** Folds case and separators, so maxMessageBytes and max-message-bytes both find max_message_bytes. */
export function fold(name: string): string {
  return name.toLowerCase().replace(/[-_]/g, '');
}

export function closest(name: string, candidates: readonly string[]): string | undefined {
  const folded = fold(name);
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(folded.length / 3)) + 1;
  for (const candidate of candidates) {
    const distance = editDistance(folded, fold(candidate));
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return best;
}

/** "unknown key …", with the nearest key of its section, or the same key in another section. */
export function unknownKey(keys: readonly { path: string; section: string; key: string }[], section: string | undefined, key: string): string {
  const path = section === undefined ? key : `${section}.${key}`;
  let suggestion: string | undefined;
  if (section !== undefined) {
    const near = closest(key, keys.filter((k) => k.section === section).map((k) => k.key));
    if (near !== undefined) suggestion = `${section}.${near}`;
  }
  if (suggestion === undefined) {
    // The right key in the wrong place: `cert` under [smtp], or `hostname` above every [section].
    const elsewhere = keys.filter((k) => fold(k.key) === fold(key));
    if (elsewhere.length === 1) suggestion = elsewhere[0].path;
  }
  return `unknown key "${path}"${suggestion === undefined ? '' : ` (did you mean "${suggestion}"?)`}`;
}

export function unknownSection(sections: readonly string[], name: string): string {
  const suggestion = closest(name, sections);
  return `unknown section "[${name}]"${suggestion === undefined ? '' : ` (did you mean "[${suggestion}]"?)`}`;
}
