/**
 * A systemd unit file as systemd reads it (systemd.syntax(7)): sections of `Key=value` lines,
 * comments (# and ;) and blank lines ignored, a key repeated keeps every value. Enough to test
 * what `reexec init --systemd` writes; `systemd-analyze verify` checks the rest.
 */
export type UnitFile = Map<string, Map<string, string[]>>;

export function parseUnitFile(text: string): UnitFile {
  const unit: UnitFile = new Map();
  let section: Map<string, string[]> | undefined;
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[([^\]]+)\]$/.exec(line);
    if (header) {
      section = unit.get(header[1]!) ?? new Map();
      unit.set(header[1]!, section);
      continue;
    }
    const eq = line.indexOf('=');
    if (!section || eq <= 0) throw new Error(`line ${i + 1} is neither a section, a comment nor Key=value: ${raw}`);
    const key = line.slice(0, eq).trim();
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return unit;
}

/** The one value of a key (undefined if absent; an error if repeated). */
export function unitValue(unit: UnitFile, section: string, key: string): string | undefined {
  const values = unit.get(section)?.get(key);
  if (values && values.length > 1) throw new Error(`${section}.${key} is set ${values.length} times`);
  return values?.[0];
}

/**
 * A command line as systemd splits it (systemd.service(5), "Command lines"): words separated
 * by spaces, double or single quotes group, backslash escapes, "%%" is "%" and "$$" is "$".
 */
export function splitCommandLine(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (!quote && c === ' ') {
      if (word !== undefined) words.push(word);
      word = undefined;
      continue;
    }
    word ??= '';
    if (quote && c === quote) quote = undefined;
    else if (!quote && (c === '"' || c === "'")) quote = c;
    else if (c === '\\' && i + 1 < line.length) word += line[++i];
    else if ((c === '%' || c === '$') && line[i + 1] === c) word += line[++i];
    else word += c;
  }
  if (quote) throw new Error(`unterminated quote in ${line}`);
  if (word !== undefined) words.push(word);
  return words;
}
