/** A word as a POSIX shell reads it back: bare when safe, else in single quotes. */
export const shellQuote = (s: string): string => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
