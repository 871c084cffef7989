import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, copyFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, validateListen } from './config.js';

/**
 * What `reexec init` does, apart from printing: render the commented config file and the
 * client snippets from templates/, and write the config file without ever silently replacing
 * a different one.
 */

/** templates/ at the package root (same relative place from src/ and from dist/). */
export const templatesDir = (): string => fileURLToPath(new URL('../../templates/', import.meta.url));

/** Replace every {{name}}; a placeholder without a value is a bug in the template. */
export function renderTemplate(text: string, values: Record<string, string>, what = 'template'): string {
  return text.replace(/\{\{([a-z0-9-]+)\}\}/g, (_, name: string) => {
    const v = values[name];
    if (v === undefined) throw new Error(`${what}: no value for placeholder {{${name}}}`);
    return v;
  });
}

const readTemplate = (relPath: string): string => readFileSync(join(templatesDir(), relPath), 'utf8');

/** "~/x" → "$HOME/x", then absolute. */
export function resolveUserPath(path: string): string {
  return resolve(path.replace(/^~(?=\/|$)/, homedir()));
}

/**
 * Check listen addresses for a config that clients will be pointed at: valid, and with a
 * fixed port (port 0 would move on every start).
 */
export function checkInitListen(listen: readonly string[]): string[] {
  if (listen.length === 0) throw new ConfigError('at least one listen address is needed');
  return listen.map((addr) => {
    validateListen(addr);
    if (!addr.startsWith('unix:') && /:0+$/.test(addr)) {
      throw new ConfigError(`listen address "${addr}": port 0 picks a different port on every start, so clients could not be configured; choose a fixed port (the default is 50051)`);
    }
    return addr;
  });
}

/** Files of a TLS and token setup (`reexec init --tls`), written into the config's security section. */
export interface SecurityFiles {
  cert: string;
  key: string;
  clientCa: string;
  tokenFile: string;
}

/** Where the commented security section points when `--tls` was not given. */
const EXAMPLE_SECURITY: SecurityFiles = {
  cert: '~/.config/reexec/tls/server.crt',
  key: '~/.config/reexec/tls/server.key',
  clientCa: '~/.config/reexec/tls/ca.crt',
  tokenFile: '~/.config/reexec/tokens.yaml',
};

/** Uncomment the "# tls:" block and auth's token-file and anonymous settings of the template. */
function activateSecurity(text: string): string {
  const lines = text.split('\n');
  const start = lines.indexOf('# tls:');
  const end = lines.findIndex((l, i) => i > start && l.startsWith('#   client-ca:'));
  const auth = lines.map((l, i) => (/^ {2}# (token-file|anonymous):/.test(l) ? i : -1)).filter((i) => i >= 0);
  if (start < 0 || end < 0 || auth.length !== 2) throw new Error('templates/config.yaml: the security settings ("# tls:" … "#   client-ca:", auth\'s "# token-file:" and "# anonymous:") are missing');
  for (let i = start; i <= end; i++) lines[i] = lines[i]!.replace(/^# /, '');
  for (const i of auth) lines[i] = lines[i]!.replace(/^ {2}# /, '  ');
  return lines.join('\n');
}

/**
 * Uncomment "# execution:" and its "#   run-as:" line with this user: the rest of the section
 * stays commented (its defaults apply).
 */
function activateRunAs(text: string, user: string): string {
  const lines = text.split('\n');
  const start = lines.indexOf('# execution:');
  const at = lines.findIndex((l, i) => i > start && /^# {3}run-as:/.test(l));
  if (start < 0 || at < 0) throw new Error('templates/config.yaml: the execution settings ("# execution:" … "#   run-as:") are missing');
  lines[start] = 'execution:';
  lines[at] = `  run-as: ${JSON.stringify(user)}`;
  return lines.join('\n');
}

/**
 * Uncomment "# upstream:" and its "#   url:" line with this URL: the rest of the section
 * stays commented (its defaults apply; the comments say what each does).
 */
function activateUpstream(text: string, url: string): string {
  const lines = text.split('\n');
  const start = lines.indexOf('# upstream:');
  const at = lines.findIndex((l, i) => i > start && /^# {3}url:/.test(l));
  if (start < 0 || at < 0) throw new Error('templates/config.yaml: the upstream settings ("# upstream:" … "#   url:") are missing');
  lines[start] = 'upstream:';
  lines[at] = `  url: ${JSON.stringify(url)}`;
  return lines.join('\n');
}

/**
 * The config file for these settings. YAML double-quoted strings are JSON strings. With
 * `security`, the TLS and token section is written active, pointing at those files; with
 * `runAs`, execution.run-as (who actions of a daemon run as root run as).
 */
export function renderConfigFile(opts: { dataDir: string; listen: readonly string[]; security?: SecurityFiles; localUsers?: 'any' | readonly string[]; runAs?: string; upstream?: string }): string {
  const listen = opts.listen.length === 1 ? JSON.stringify(opts.listen[0]) : `[${opts.listen.map((a) => JSON.stringify(a)).join(', ')}]`;
  const sec = opts.security ?? EXAMPLE_SECURITY;
  const quote = (p: string): string => (opts.security ? JSON.stringify(p) : p);
  const text = renderTemplate(
    readTemplate('config.yaml'),
    {
      listen,
      'data-dir': JSON.stringify(opts.dataDir),
      'tls-cert': quote(sec.cert),
      'tls-key': quote(sec.key),
      'tls-client-ca': quote(sec.clientCa),
      'token-file': quote(sec.tokenFile),
      'local-users': opts.localUsers === 'any' ? 'any' : `[${(opts.localUsers ?? []).map((u) => JSON.stringify(u)).join(', ')}]`,
    },
    'templates/config.yaml',
  );
  const secured = opts.security ? activateSecurity(text) : text;
  const withRunAs = opts.runAs ? activateRunAs(secured, opts.runAs) : secured;
  return opts.upstream ? activateUpstream(withRunAs, opts.upstream) : withRunAs;
}

export interface ClientEndpoint {
  /** For BuildStream: http://HOST:PORT, or undefined when reexec serves only on unix sockets. */
  httpUrl?: string;
  /** For Bazel: grpc://HOST:PORT or unix:PATH. */
  grpcUrl: string;
  /** Set when the listen address serves every interface: clients on this host use loopback. */
  wildcard?: string;
}

/** Where clients should connect, given what the daemon listens on (the first TCP address wins). */
export function clientEndpoint(listen: readonly string[]): ClientEndpoint {
  const tcp = listen.find((a) => !a.startsWith('unix:'));
  if (!tcp) {
    const path = listen[0]!.slice('unix:'.length).replace(/^\/\/(?=\/)/, '');
    return { grpcUrl: `unix:${path}` };
  }
  const i = tcp.lastIndexOf(':');
  let host = tcp.slice(0, i);
  const port = tcp.slice(i + 1);
  let wildcard: string | undefined;
  if (host === '0.0.0.0') {
    wildcard = host;
    host = '127.0.0.1';
  } else if (host === '[::]' || host === '::') {
    wildcard = host;
    host = '[::1]';
  }
  return { httpUrl: `http://${host}:${port}`, grpcUrl: `grpc://${host}:${port}`, ...(wildcard ? { wildcard } : {}) };
}

export interface ClientSnippets {
  buildstream2: string;
  buildstream1: string;
  bazel: string;
}

const NO_HTTP = (client: string): string =>
  `# ${client} connects only over http:// or https://, and reexec listens only on unix sockets.\n` +
  `# Add a TCP address, e.g.: reexec init --force --listen 127.0.0.1:50051 --listen unix:/path/to.sock\n`;

/** What clients of a TLS and token setup need: the CA, their certificate and key, a token. */
export interface ClientTlsFiles {
  caCert: string;
  clientCert: string;
  clientKey: string;
  /** The token itself (Bazel's --remote_header) and a file holding it (BuildStream 2). */
  token: string;
  tokenFile: string;
}

/** Ready-to-paste client configuration for this endpoint (over TLS with a client certificate and a token, given `tls`). */
export function renderClientSnippets(endpoint: ClientEndpoint, tls?: ClientTlsFiles): ClientSnippets {
  const values: Record<string, string> = {
    'http-url': endpoint.httpUrl ?? '',
    'grpc-url': endpoint.grpcUrl,
    'https-url': (endpoint.httpUrl ?? '').replace(/^http:/, 'https:'),
    'grpcs-url': endpoint.grpcUrl.replace(/^grpc:/, 'grpcs:'),
    ...(tls ? { 'ca-cert': tls.caCert, 'client-cert': tls.clientCert, 'client-key': tls.clientKey, token: tls.token, 'token-file': tls.tokenFile } : {}),
  };
  const render = (file: string): string => {
    const name = tls ? file.replace(/(\.conf)?$/, (ext) => `-tls${ext}`) : file;
    return renderTemplate(readTemplate(`clients/${name}`), values, `templates/clients/${name}`);
  };
  return {
    buildstream2: endpoint.httpUrl ? render('buildstream2.conf') : NO_HTTP('BuildStream'),
    buildstream1: endpoint.httpUrl ? render('buildstream1.conf') : NO_HTTP('BuildStream 1.6'),
    bazel: render('bazelrc'),
  };
}

export type WriteOutcome = 'created' | 'unchanged' | 'overwritten';

/** The config file exists with other content, and overwriting was not asked for. */
export class ConfigFileDiffersError extends Error {
  constructor(readonly path: string) {
    super(`${path} already exists with different content; rerun with --force to overwrite it`);
    this.name = 'ConfigFileDiffersError';
  }
}

/**
 * Write the config file unless it already says exactly this. A different file is replaced
 * only with `force`, and then kept as FILE.bak. The new content appears atomically.
 */
export function writeConfigFile(path: string, content: string, force: boolean): { outcome: WriteOutcome; backupPath?: string } {
  let existing: string | undefined;
  if (existsSync(path)) {
    try {
      existing = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read ${path}: ${(err as Error).message}`);
    }
    if (existing === content) return { outcome: 'unchanged' };
    if (!force) throw new ConfigFileDiffersError(path);
  }
  try {
    mkdirSync(dirname(path), { recursive: true });
    let backupPath: string | undefined;
    if (existing !== undefined) {
      backupPath = `${path}.bak`;
      copyFileSync(path, backupPath);
    }
    const tmp = `${path}.tmp-${process.pid}`;
    writeFileSync(tmp, content, { mode: 0o644 });
    renameSync(tmp, path);
    return { outcome: existing === undefined ? 'created' : 'overwritten', ...(backupPath ? { backupPath } : {}) };
  } catch (err) {
    throw new ConfigError(`cannot write ${path}: ${(err as Error).message}`);
  }
}

export interface InitPlan {
  configPath: string;
  dataDir: string;
  listen: string[];
  content: string;
  endpoint: ClientEndpoint;
  clients: ClientSnippets;
}

/**
 * Everything init will write and print, computed without touching the disk. With `tls`
 * (the files `reexec init --tls` made), the config turns TLS, mutual TLS and tokens on and
 * the client snippets use them.
 */
export function planInit(opts: {
  configPath: string;
  dataDir: string;
  listen: readonly string[];
  tls?: SecurityFiles & { client: ClientTlsFiles };
  localUsers?: 'any' | readonly string[];
  /** execution.run-as to write (init --system --service-user NAME). */
  runAs?: string;
  /** upstream.url to write (init --upstream URL). */
  upstream?: string;
}): InitPlan {
  const listen = checkInitListen(opts.listen);
  const configPath = resolveUserPath(opts.configPath);
  const dataDir = resolveUserPath(opts.dataDir);
  const endpoint = clientEndpoint(listen);
  const content = renderConfigFile({ dataDir, listen, localUsers: opts.localUsers, ...(opts.tls ? { security: opts.tls } : {}), ...(opts.runAs ? { runAs: opts.runAs } : {}), ...(opts.upstream ? { upstream: opts.upstream } : {}) });
  return { configPath, dataDir, listen, content, endpoint, clients: renderClientSnippets(endpoint, opts.tls?.client) };
}
