import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { Logger } from '../util/logger.js';
import { formatRights, parseRights, type Right } from './rights.js';

/** One accepted token: its SHA-256 (the token itself is not kept), name and rights. */
export interface TokenEntry {
  hash: Buffer;
  /** For logs and per-client limits: the `name` given, else "token-" and a short hash. */
  name: string;
  rights: ReadonlySet<Right>;
}

export class TokenFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenFileError';
  }
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** Tokens shorter than this are refused: they can be guessed. */
export const MIN_TOKEN_LENGTH = 16;

/**
 * Parse a token file: a YAML mapping of `token: rights`, where rights is "read", "read, write",
 * a list, or "all"; or `token: {rights: ..., name: alice}`. A key "sha256:HEX" stands for the
 * token whose SHA-256 is HEX, so the file need not hold the token itself.
 */
export function parseTokenFile(text: string, where: string): TokenEntry[] {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new TokenFileError(`${where}: not valid YAML: ${(err as Error).message}`);
  }
  if (raw === null || raw === undefined) return [];
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new TokenFileError(`${where}: must be a mapping of "token: rights" lines`);
  const entries: TokenEntry[] = [];
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    const label = key.startsWith('sha256:') ? key.slice(0, 15) + '…' : `${key.slice(0, 4)}…`;
    let hash: Buffer;
    const hashed = /^sha256:([0-9a-fA-F]{64})$/.exec(key);
    if (hashed) hash = Buffer.from(hashed[1]!, 'hex');
    else {
      if (!/^[\x21-\x7e]+$/.test(key)) throw new TokenFileError(`${where}: token "${label}" has characters an HTTP header cannot carry (use printable ASCII without spaces)`);
      if (key.length < MIN_TOKEN_LENGTH) {
        throw new TokenFileError(`${where}: token "${label}" is ${key.length} characters long; use at least ${MIN_TOKEN_LENGTH} (e.g. openssl rand -hex 32)`);
      }
      hash = sha256(key);
    }
    let rightsValue = value;
    let name: string | undefined;
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      const v = value as Record<string, unknown>;
      rightsValue = v['rights'];
      if (v['name'] !== undefined) name = String(v['name']);
    }
    let rights: Set<Right>;
    try {
      rights = parseRights(rightsValue);
    } catch (err) {
      throw new TokenFileError(`${where}: token "${label}": ${(err as Error).message}`);
    }
    entries.push({ hash, name: name ?? `token-${hash.toString('hex').slice(0, 8)}`, rights });
  }
  return entries;
}

/**
 * The token file, re-read when it changes (checked at most every `checkIntervalMs` as calls
 * come in), so tokens are added and revoked without a restart. A file that turns invalid
 * keeps the previous tokens (and logs why); a file that disappears revokes them all.
 */
export class TokenFile {
  private entries: TokenEntry[] = [];
  private signature = '';
  private checkedAt = 0;

  private constructor(
    readonly path: string,
    private readonly log: Logger,
    private readonly checkIntervalMs: number,
  ) {}

  /** Load it now; a missing or invalid file at start is an error. */
  static open(path: string, log: Logger, opts: { checkIntervalMs?: number } = {}): TokenFile {
    const f = new TokenFile(path, log, opts.checkIntervalMs ?? 1000);
    let st;
    try {
      st = statSync(path);
    } catch (err) {
      throw new TokenFileError(`token file ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : (err as Error).message}`);
    }
    f.entries = parseTokenFile(readFileSync(path, 'utf8'), path);
    f.signature = TokenFile.signatureOf(st);
    f.checkedAt = Date.now();
    if ((st.mode & 0o077) !== 0) log.warn(`token file ${path} is readable by other users (mode ${(st.mode & 0o777).toString(8)}): chmod 600 ${path}`);
    log.info(`access tokens from ${path}: ${f.describe()}`);
    return f;
  }

  private static signatureOf(st: { mtimeMs: number; ctimeMs: number; size: number; ino: number }): string {
    return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
  }

  private describe(): string {
    return this.entries.length === 0 ? 'no tokens' : this.entries.map((e) => `${e.name} (${formatRights(e.rights)})`).join(', ');
  }

  /** Re-read the file if it changed since the last look. */
  refresh(force = false): void {
    const now = Date.now();
    if (!force && now - this.checkedAt < this.checkIntervalMs) return;
    this.checkedAt = now;
    let st;
    try {
      st = statSync(this.path);
    } catch {
      if (this.signature !== 'missing') {
        this.signature = 'missing';
        this.entries = [];
        this.log.error(`token file ${this.path} is gone: every token is refused until it is back`);
      }
      return;
    }
    const sig = TokenFile.signatureOf(st);
    if (sig === this.signature) return;
    this.signature = sig;
    try {
      this.entries = parseTokenFile(readFileSync(this.path, 'utf8'), this.path);
      this.log.info(`token file reloaded: ${this.describe()}`);
    } catch (err) {
      this.log.error(`token file ${this.path} changed but cannot be used, keeping the previous tokens: ${(err as Error).message}`);
    }
  }

  /** The entry for a presented token, if any (constant-time comparison of hashes). */
  lookup(token: string): TokenEntry | undefined {
    this.refresh();
    const h = sha256(token);
    let found: TokenEntry | undefined;
    for (const e of this.entries) if (timingSafeEqual(e.hash, h)) found = e;
    return found;
  }

  get size(): number {
    return this.entries.length;
  }
}
