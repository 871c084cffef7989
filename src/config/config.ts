import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parseRights, type Right } from '../auth/rights.js';
import { canonicalIsa } from '../scheduler/platform.js';
import { FORWARD_MODES, type ForwardMode } from '../scheduler/scheduler.js';
import { LOG_FORMATS, type LogFormat, type LogLevel } from '../util/logger.js';
import { UserError } from '../util/user-error.js';

/**
 * Configuration goes through three stages: what the user wrote (RawConfig, kebab-case YAML),
 * defaults applied and values checked (Config), then used by the daemon. Everything has an
 * embedded default, so `reexec start` works with no file at all.
 */
export interface Config {
  /** Addresses to listen on: "HOST:PORT" (port 0 picks a free one) or "unix:PATH". */
  listen: string[];
  dataDir: string;
  /** "*" accepts any well-formed instance name; a list restricts them. */
  instances: string[] | '*';
  storage: {
    /** Blobs up to this size live inside LMDB; larger ones are files. */
    inlineMaxBytes: number;
    /** fsync file blobs before they become visible. */
    fsync: boolean;
    /** Advertised max_batch_total_size_bytes (BatchUpdateBlobs/BatchReadBlobs): blob bytes of one batch, framing not counted. */
    maxBatchBytes: number;
    /** The CAS budget in blob bytes: a size, or a share of the file system holding the data dir. */
    maxBytes: SizeOrShare;
    /** Past this, least-recently-used blobs are evicted in the background (a size or a share of maxBytes)… */
    highWatermark: SizeOrShare;
    /** …down to this. */
    lowWatermark: SizeOrShare;
    /** Past this, uploads fail with RESOURCE_EXHAUSTED (a size or a share of maxBytes). */
    hardLimit: SizeOrShare;
    /** Uploads also fail when the file system would keep less free space than this (a size or a share of it); 0: off. */
    minFreeDisk: SizeOrShare;
    /**
     * The room kept for deletions: a reserve file of this size in the data dir, released when
     * the file system fills so that eviction can commit, and as much headroom that writes other
     * than deletions never use. 'auto': 5 % of the file system, at least 4 MiB, at most 64 MiB; 0: none.
     */
    diskReserve: SizeOrShare | 'auto';
    /** Blobs written or used this recently are never evicted. */
    gracePeriodSeconds: number;
    /** Bound of remote execution's staging cache (DATA/cache): a size or a share of maxBytes. */
    stagingCacheMaxBytes: SizeOrShare;
  };
  grpc: {
    /** Largest message the server accepts. */
    maxReceiveMessageBytes: number;
    /** HTTP/2 stream and connection flow-control window the server grants clients. */
    flowControlWindowBytes: number;
  };
  log: { format: LogFormat; level: LogLevel };
  /** Prometheus metrics over HTTP at http://LISTEN/metrics; null: not served. */
  metrics: { listen: string | null };
  /** TLS for every TCP listener (unix sockets stay plain unless a listener says otherwise); null: none. */
  tls: TlsConfig | null;
  /** TLS of single listeners, by address, overriding `tls` (null: plain). */
  listenerTls: Record<string, TlsConfig | null>;
  auth: AuthConfig;
  limits: LimitsConfig;
  execution: ExecutionConfig;
  history: HistoryConfig;
  /** A remote REAPI cluster this daemon stands in front of (README "Behind a cluster"); null: none. */
  upstream: UpstreamConfig | null;
  /** The file this came from, if any. */
  source?: string;
}

export interface PoolConfig {
  name: string;
  /** ISA names (BuildStream's or the REAPI lexicon's) the pool's workers provide. */
  isa: string[];
  slots: number;
}

export interface ExecutionConfig {
  enabled: boolean;
  /**
   * Worker pools; "auto" (the default): one pool for the host's ISA with a slot per core, plus
   * one pool with half as many slots for every foreign ISA the host can emulate.
   */
  pools: PoolConfig[] | 'auto';
  /** Timeout of actions that set none. BuildStream never sets one and builds can take hours. */
  defaultTimeoutSeconds: number;
  maxTimeoutSeconds: number;
  /** How long finished operations stay queryable (WaitExecution, GetOperation). */
  operationRetentionSeconds: number;
  /**
   * Who actions run as when the daemon runs as root: "auto" (the dedicated `reexec` user, else
   * `nobody`), a user name or a uid. Never root. A daemon run by another user runs them as itself.
   */
  runAs: string;
  /** The host-tools sandbox (Bazel, recc): what its actions see of the host. */
  hostTools: HostToolsConfig;
  /** Bots (Remote Workers API, buildbox-worker) taking work from this server. */
  bots: BotsConfig;
}

export interface BotsConfig {
  /** A bot that does not call UpdateBotSession for this long loses its session; its lease runs elsewhere. */
  sessionTimeoutSeconds: number;
  /** How long UpdateBotSession is held waiting for work (less when the bot's deadline is nearer). */
  pollSeconds: number;
  /** How long the properties of a bot that went away stay valid for new actions (which then wait for it). */
  propertyGraceSeconds: number;
  /** Times an action is leased (to bots or slots that go away) before it fails UNAVAILABLE. */
  maxAttempts: number;
}

export interface HostToolsConfig {
  /**
   * The file system host-tools actions see as "/", read-only: the host's own (the default), or
   * a toolchain root, e.g. one whose compilers match those the clients configured (Bazel
   * checks that remote compiles include nothing from outside the toolchain it knows).
   */
  root: string;
  /**
   * Paths hidden from host-tools actions besides the defaults (HOST_TOOLS_HIDDEN), as the
   * sandbox sees them (inside `root`).
   */
  hide: string[];
  /** Paths shown to host-tools actions although a hidden path holds them or a default hides them (inside `root`). */
  expose: string[];
}

/** The action history (`reexec history`, `show`, `explain`, `shell`). */
export interface HistoryConfig {
  /** Record every Execute and GetActionResult (off: nothing is recorded, the commands say so). */
  enabled: boolean;
  /** Most entries kept; the oldest go first. */
  maxEntries: number;
  /** Entries older than this go. */
  maxAgeSeconds: number;
  /** The blobs of the newest this many failed actions are kept from eviction, to inspect them (0: none). */
  keepFailed: number;
}

/**
 * The upstream: another REAPI server (reexec, Buildbarn, BuildGrid, buildbox-casd...) this
 * daemon reads through and writes behind to. src/upstream/ uses it.
 */
export interface UpstreamConfig {
  /** grpc://HOST:PORT or grpcs://HOST:PORT (TLS). */
  url: string;
  /** The instance name used on the upstream ('' by default), whatever instance the local client named. */
  instance: string;
  /** PEM file of the CA that signed the upstream's certificate (grpcs://); null: the system's roots. */
  serverCert: string | null;
  /** PEM files of a client certificate and its key, for an upstream that wants mutual TLS. */
  clientCert: string | null;
  clientKey: string | null;
  /** A file holding the bearer token sent to the upstream (its first line); null: none. */
  tokenFile: string | null;
  /** Deadline of one short call to the upstream (FindMissingBlobs, GetActionResult, a batch, the gap between two streamed messages). */
  callTimeoutSeconds: number;
  /** Write local uploads and action results through to the upstream (false: read-only use of it). */
  push: boolean;
  /** The write-behind queue (kept in the data dir: survives restarts). */
  queue: UpstreamQueueConfig;
  /** Retries of queued uploads, and re-probes of an upstream that is down: exponential backoff between these bounds. */
  retry: { initialSeconds: number; maxSeconds: number };
  /**
   * Which actions are forwarded to the upstream's Execution service: `local` none (the
   * default), `upstream` every one, `unsupported` those no local pool or bot can run (an ISA
   * this host lacks, a platform property only the cluster offers).
   */
  execute: ForwardMode;
  /** Forwarded actions in flight at once (each one Execute stream to the upstream); more wait in the queue. */
  maxInFlight: number;
}

export interface UpstreamQueueConfig {
  /** Pending uploads (blobs, action results, assets) at most; past this new ones are dropped, and counted. */
  maxItems: number;
  /** Uploads sent to the upstream at once. */
  concurrency: number;
}

/** Keys of the `upstream` section (more are added by those who use them: keep one list). */
export const UPSTREAM_KEYS = ['url', 'instance', 'server-cert', 'client-cert', 'client-key', 'token-file', 'call-timeout', 'push', 'queue', 'retry', 'execute', 'max-in-flight'];

export const DEFAULT_UPSTREAM: Omit<UpstreamConfig, 'url'> = {
  instance: '',
  serverCert: null,
  clientCert: null,
  clientKey: null,
  tokenFile: null,
  callTimeoutSeconds: 5,
  push: true,
  queue: { maxItems: 100_000, concurrency: 4 },
  retry: { initialSeconds: 1, maxSeconds: 30 },
  execute: 'local',
  maxInFlight: 64,
};

/** An upstream URL checked: grpc:// or grpcs:// with a host and a port. */
export function validateUpstreamUrl(url: string, where = 'upstream'): string {
  if (!/^grpcs?:\/\/(\[[0-9a-fA-F:.]+\]|[^:/\s]+):[0-9]{1,5}\/?$/.test(url)) {
    throw new ConfigError(`${where}: url ${JSON.stringify(url)} must be grpc://HOST:PORT or grpcs://HOST:PORT (TLS)`);
  }
  return url.replace(/\/$/, '');
}

/** upstream: {url, ...}, a bare URL, or off (null, false, "off"). */
export function compileUpstream(v: unknown, where: string, dflt: UpstreamConfig | null): UpstreamConfig | null {
  if (v === undefined) return dflt;
  if (v === null || v === false || v === 'off' || v === 'none') return null;
  if (typeof v === 'string') return { ...DEFAULT_UPSTREAM, url: validateUpstreamUrl(v, where) };
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${where}: "upstream" must be a mapping with at least url (grpc://HOST:PORT), or off`);
  const raw = v as Raw;
  for (const k of Object.keys(raw)) if (!UPSTREAM_KEYS.includes(k)) throw new ConfigError(`${where}: upstream has no setting "${k}" (${UPSTREAM_KEYS.join(', ')})`);
  if (typeof raw['url'] !== 'string') throw new ConfigError(`${where}: upstream needs "url" (grpc://HOST:PORT or grpcs://HOST:PORT)`);
  const file = (key: string): string | null => {
    const p = raw[key];
    if (p === undefined || p === null) return null;
    if (typeof p !== 'string' || !p) throw new ConfigError(`${where}: upstream "${key}" must be the path of a file`);
    return userPath(p);
  };
  const instance = raw['instance'] ?? '';
  if (typeof instance !== 'string') throw new ConfigError(`${where}: upstream "instance" must be an instance name ("" or e.g. main)`);
  const q = section(raw, 'queue', `${where}: upstream`);
  const r = section(raw, 'retry', `${where}: upstream`);
  for (const k of Object.keys(q)) if (!['max-items', 'concurrency'].includes(k)) throw new ConfigError(`${where}: upstream queue has no setting "${k}" (max-items, concurrency)`);
  for (const k of Object.keys(r)) if (!['initial', 'max'].includes(k)) throw new ConfigError(`${where}: upstream retry has no setting "${k}" (initial, max)`);
  const d = DEFAULT_UPSTREAM;
  const duration = (o: Raw, key: string, dflt: number, w: string): number => (o[key] === undefined || o[key] === null ? dflt : parseDuration(o[key], `${w}: ${key}`));
  const upstream: UpstreamConfig = {
    url: validateUpstreamUrl(raw['url'], where),
    instance,
    serverCert: file('server-cert'),
    clientCert: file('client-cert'),
    clientKey: file('client-key'),
    tokenFile: file('token-file'),
    callTimeoutSeconds: duration(raw, 'call-timeout', d.callTimeoutSeconds, `${where}: upstream`),
    push: bool(raw, 'push', `${where}: upstream`, d.push),
    queue: {
      maxItems: Math.floor(num(q, 'max-items', `${where}: upstream queue`, d.queue.maxItems, 1)),
      concurrency: Math.floor(num(q, 'concurrency', `${where}: upstream queue`, d.queue.concurrency, 1)),
    },
    retry: {
      initialSeconds: duration(r, 'initial', d.retry.initialSeconds, `${where}: upstream retry`),
      maxSeconds: duration(r, 'max', d.retry.maxSeconds, `${where}: upstream retry`),
    },
    execute: oneOf(raw, 'execute', `${where}: upstream`, FORWARD_MODES, d.execute),
    maxInFlight: Math.floor(num(raw, 'max-in-flight', `${where}: upstream`, d.maxInFlight, 1)),
  };
  if (!!upstream.clientCert !== !!upstream.clientKey) throw new ConfigError(`${where}: upstream needs both client-cert and client-key (mutual TLS), or neither`);
  if ((upstream.serverCert || upstream.clientCert) && upstream.url.startsWith('grpc://')) {
    throw new ConfigError(`${where}: upstream TLS files given but the url is ${upstream.url}: use grpcs://`);
  }
  if (upstream.retry.maxSeconds < upstream.retry.initialSeconds) throw new ConfigError(`${where}: upstream retry "max" (${upstream.retry.maxSeconds} s) is below "initial" (${upstream.retry.initialSeconds} s)`);
  return upstream;
}

/** A size in bytes, or a share of something else (the file system, or storage.max-bytes). */
export type SizeOrShare = { bytes: number } | { share: number };

export interface TlsConfig {
  /** PEM files: the server's certificate (chain) and its private key. */
  cert: string;
  key: string;
  /** PEM file of the CA that signs client certificates: mutual TLS, clients without one are refused. */
  clientCa: string | null;
}

export interface AuthConfig {
  /** `token: rights` lines (YAML), re-read when the file changes; null: no tokens. */
  tokenFile: string | null;
  /** Rights of clients that present no token, when there is a token file. */
  anonymous: Right[];
  /**
   * Without a token file: local users served besides the daemon's own user and root (names or
   * uids), or "any". Default: none.
   */
  localUsers: 'any' | string[];
}

export interface LimitsConfig {
  /** Calls one client (a token, else an address) may have in flight; 0: unlimited. */
  maxCallsPerClient: number;
  /** Seconds a call may sit with nothing sent or received (never cuts a running Execute); 0: never. */
  idleTimeoutSeconds: number;
  /** Deepest directory nesting of an input root (staging) or GetTree. */
  maxTreeDepth: number;
  /** Files, symlinks and directories of one input root, counting repeated subtrees each time; GetTree: directories. */
  maxTreeEntries: number;
  /** Open connections across all listeners; 'auto': half the open-file limit, at most 4096; 0: no limit. */
  maxConnections: number | 'auto';
  /** Open connections from one client address (TCP); 0: no limit. */
  maxConnectionsPerClient: number;
  /** Seconds a new connection has to complete its handshake (TLS, HTTP/2 preface and SETTINGS); 0: no limit. */
  handshakeTimeoutSeconds: number;
  /** Seconds a connection may stay open with no call in flight; 0: forever. */
  connectionIdleTimeoutSeconds: number;
  /** Seconds between the server's keepalive pings, and how long it waits for the answer before dropping the peer. */
  keepaliveTimeSeconds: number;
  keepaliveTimeoutSeconds: number;
}

export class ConfigError extends UserError {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

function xdg(name: 'XDG_CONFIG_HOME' | 'XDG_DATA_HOME', fallback: string): string {
  const v = process.env[name];
  return v && isAbsolute(v) ? v : join(homedir(), fallback);
}

export const defaultConfigPath = (): string => join(xdg('XDG_CONFIG_HOME', '.config'), 'reexec', 'config.yaml');
/**
 * $XDG_DATA_HOME/reexec; for root without XDG_DATA_HOME, /var/lib/reexec: a root daemon runs
 * actions as an unprivileged user, which must reach the staging area, and /root is closed.
 */
export const defaultDataDir = (): string =>
  process.getuid?.() === 0 && !isAbsolute(process.env['XDG_DATA_HOME'] ?? '') ? ROOT_DATA_DIR : join(xdg('XDG_DATA_HOME', join('.local', 'share')), 'reexec');
export const ROOT_DATA_DIR = '/var/lib/reexec';

export const DEFAULT_LISTEN = '127.0.0.1:50051';
/** Loopback only: the metrics say what is built, so they stay private unless configured otherwise. */
export const DEFAULT_METRICS_LISTEN = '127.0.0.1:9464';

export function defaultConfig(): Config {
  return {
    listen: [DEFAULT_LISTEN],
    dataDir: defaultDataDir(),
    instances: '*',
    storage: {
      inlineMaxBytes: 64 * 1024,
      fsync: true,
      // 4 MiB - 64 KiB: a full batch and its framing fit in gRPC's default 4 MiB receive limit.
      maxBatchBytes: 4 * 1024 * 1024 - 64 * 1024,
      maxBytes: { share: 0.5 },
      highWatermark: { share: 0.9 },
      lowWatermark: { share: 0.8 },
      hardLimit: { share: 1.1 },
      minFreeDisk: { share: 0.05 },
      diskReserve: 'auto',
      gracePeriodSeconds: 600,
      stagingCacheMaxBytes: { share: 0.1 },
    },
    grpc: { maxReceiveMessageBytes: 16 * 1024 * 1024, flowControlWindowBytes: 16 * 1024 * 1024 },
    log: { format: 'human', level: 'info' },
    metrics: { listen: DEFAULT_METRICS_LISTEN },
    tls: null,
    listenerTls: {},
    auth: { tokenFile: null, anonymous: [], localUsers: [] },
    limits: {
      maxCallsPerClient: 1000,
      idleTimeoutSeconds: 300,
      maxTreeDepth: 256,
      maxTreeEntries: 4_000_000,
      maxConnections: 'auto',
      maxConnectionsPerClient: 256,
      handshakeTimeoutSeconds: 20,
      connectionIdleTimeoutSeconds: 1800,
      keepaliveTimeSeconds: 60,
      keepaliveTimeoutSeconds: 20,
    },
    execution: {
      enabled: true,
      pools: 'auto',
      defaultTimeoutSeconds: 24 * 3600,
      maxTimeoutSeconds: 7 * 24 * 3600,
      operationRetentionSeconds: 3600,
      runAs: 'auto',
      hostTools: { root: '/', hide: [], expose: [] },
      bots: { sessionTimeoutSeconds: 60, pollSeconds: 30, propertyGraceSeconds: 600, maxAttempts: 3 },
    },
    history: { enabled: true, maxEntries: 100_000, maxAgeSeconds: 14 * 86400, keepFailed: 20 },
    upstream: null,
  };
}

/**
 * A daemon for a tool's own use (a benchmark, a script): loopback on a free port, any instance
 * name, no TLS, tokens or metrics port, data in `dataDir`; everything else as in `base`.
 */
export function scratchDaemonConfig(dataDir: string, base: Config = defaultConfig()): Config {
  const config = structuredClone(base);
  config.listen = ['127.0.0.1:0'];
  config.dataDir = dataDir;
  config.instances = '*';
  config.tls = null;
  config.listenerTls = {};
  config.auth = { tokenFile: null, anonymous: [], localUsers: base.auth.localUsers };
  config.metrics = { listen: null };
  return config;
}

/** "90", "90s", "15m", "24h", "7d" → seconds. */
export function parseDuration(v: unknown, what: string): number {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v;
  const m = typeof v === 'string' ? /^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d)?\s*$/.exec(v) : null;
  if (!m) throw new ConfigError(`${what}: ${JSON.stringify(v)} is not a duration (examples: 90, 15m, 24h, 7d)`);
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
}

function compileExecution(raw: Raw, where: string, base: ExecutionConfig): ExecutionConfig {
  const duration = (key: string, dflt: number): number => (raw[key] === undefined || raw[key] === null ? dflt : parseDuration(raw[key], `${where}: ${key}`));
  let pools = base.pools;
  const poolsRaw = raw['pools'];
  if (poolsRaw === 'auto') pools = 'auto';
  else if (poolsRaw !== undefined && poolsRaw !== null) {
    if (!Array.isArray(poolsRaw)) throw new ConfigError(`${where}: "pools" must be a list (empty: no local workers, only bots), or auto`);
    pools = poolsRaw.map((p, i) => {
      if (typeof p !== 'object' || p === null) throw new ConfigError(`${where}: pools[${i}] must be a mapping with name, isa, slots`);
      const r = p as Raw;
      const name = typeof r['name'] === 'string' && r['name'] ? r['name'] : `pool-${i}`;
      const isaRaw = r['isa'];
      const isa = (Array.isArray(isaRaw) ? isaRaw : [isaRaw]).map((x) => {
        const c = typeof x === 'string' ? canonicalIsa(x) : undefined;
        if (!c) throw new ConfigError(`${where}: pools[${i}] ("${name}"): unknown ISA ${JSON.stringify(x)}`);
        return c;
      });
      return { name, isa, slots: num(r, 'slots', `${where}: pools[${i}]`, 1, 1) };
    });
  }
  return {
    enabled: bool(raw, 'enabled', where, base.enabled),
    pools,
    defaultTimeoutSeconds: duration('default-timeout', base.defaultTimeoutSeconds),
    maxTimeoutSeconds: duration('max-timeout', base.maxTimeoutSeconds),
    operationRetentionSeconds: duration('operation-retention', base.operationRetentionSeconds),
    runAs: runAs(raw['run-as'], where, base.runAs),
    hostTools: compileHostTools(section(raw, 'host-tools', where), `${where}: host-tools`, base.hostTools),
    bots: compileBots(section(raw, 'bots', where), `${where}: bots`, base.bots),
  };
}

/** execution.bots: session-timeout, poll, property-grace, max-attempts. */
function compileBots(raw: Raw, where: string, base: BotsConfig): BotsConfig {
  const keys = ['session-timeout', 'poll', 'property-grace', 'max-attempts'];
  for (const k of Object.keys(raw)) if (!keys.includes(k)) throw new ConfigError(`${where}: no setting "${k}" (${keys.join(', ')})`);
  const duration = (key: string, dflt: number): number => (raw[key] === undefined || raw[key] === null ? dflt : parseDuration(raw[key], `${where}: ${key}`));
  return {
    sessionTimeoutSeconds: duration('session-timeout', base.sessionTimeoutSeconds),
    pollSeconds: duration('poll', base.pollSeconds),
    propertyGraceSeconds: duration('property-grace', base.propertyGraceSeconds),
    maxAttempts: num(raw, 'max-attempts', where, base.maxAttempts, 1),
  };
}

/** execution.run-as: "auto", a user name or a uid. */
function runAs(v: unknown, where: string, dflt: string): string {
  if (v === undefined || v === null) return dflt;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return String(v);
  if (typeof v !== 'string' || !/^[A-Za-z0-9._][A-Za-z0-9._-]*\$?$/.test(v)) throw new ConfigError(`${where}: "run-as" must be auto, a user name or a uid, got ${JSON.stringify(v)}`);
  return v;
}

/**
 * execution.host-tools: {root, hide: [paths], expose: [paths]}. Whether the root is usable is
 * checked when the daemon starts.
 */
function compileHostTools(raw: Raw, where: string, base: HostToolsConfig): HostToolsConfig {
  const known = ['root', 'hide', 'expose'];
  for (const k of Object.keys(raw)) if (!known.includes(k)) throw new ConfigError(`${where}: no setting "${k}" (${known.join(', ')})`);
  const paths = (key: 'hide' | 'expose'): string[] => {
    const v = raw[key];
    if (v === undefined || v === null) return base[key];
    const list = Array.isArray(v) ? v : [v];
    return list.map((p) => {
      if (typeof p !== 'string' || (!p.startsWith('/') && !p.startsWith('~'))) throw new ConfigError(`${where}: "${key}" must be a list of absolute paths, got ${JSON.stringify(p)}`);
      return userPath(p);
    });
  };
  const root = raw['root'];
  if (root !== undefined && root !== null && (typeof root !== 'string' || !root)) throw new ConfigError(`${where}: "root" must be the path of a directory, e.g. / or /srv/toolchain-root`);
  return { root: typeof root === 'string' ? userPath(root) : base.root, hide: paths('hide'), expose: paths('expose') };
}

type Raw = Record<string, unknown>;

function compileHistory(raw: Raw, where: string, base: HistoryConfig): HistoryConfig {
  for (const k of Object.keys(raw)) if (!['enabled', 'max-entries', 'max-age', 'keep-failed'].includes(k)) throw new ConfigError(`${where}: no setting "${k}" (enabled, max-entries, max-age, keep-failed)`);
  const age = raw['max-age'];
  return {
    enabled: bool(raw, 'enabled', where, base.enabled),
    maxEntries: Math.floor(num(raw, 'max-entries', where, base.maxEntries, 1)),
    maxAgeSeconds: age === undefined || age === null ? base.maxAgeSeconds : parseDuration(age, `${where}: max-age`),
    keepFailed: Math.floor(num(raw, 'keep-failed', where, base.keepFailed, 0)),
  };
}

function section(raw: Raw, key: string, where: string): Raw {
  const v = raw[key];
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${where}: "${key}" must be a mapping`);
  return v as Raw;
}

function num(raw: Raw, key: string, where: string, dflt: number, min = 0): number {
  const v = raw[key];
  if (v === undefined || v === null) return dflt;
  const n = typeof v === 'string' ? parseSize(v, `${where}: ${key}`) : v;
  if (typeof n !== 'number' || !Number.isFinite(n) || n < min) throw new ConfigError(`${where}: "${key}" must be a number ≥ ${min}, got ${JSON.stringify(v)}`);
  return n;
}

function bool(raw: Raw, key: string, where: string, dflt: boolean): boolean {
  const v = raw[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw new ConfigError(`${where}: "${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function oneOf<T extends string>(raw: Raw, key: string, where: string, allowed: readonly T[], dflt: T): T {
  const v = raw[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'string' || !allowed.includes(v as T)) {
    throw new ConfigError(`${where}: "${key}" must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
  }
  return v as T;
}

/**
 * A size ("10GiB", 1073741824) or a share ("90%"). With `fractions`, a plain number up to 4 is
 * a share too (0.9 = 90%): nobody means a watermark of one byte.
 */
function sizeOrShare(raw: Raw, key: string, where: string, dflt: SizeOrShare, opts: { fractions: boolean; maxShare: number; zeroMeansOff?: boolean }): SizeOrShare {
  const v = raw[key];
  if (v === undefined || v === null) return dflt;
  // 0, "0", "0%", "0B", "off": none (where the setting allows it).
  if (opts.zeroMeansOff && (v === false || v === 'off' || (typeof v === 'number' && v === 0) || (typeof v === 'string' && /^\s*0+(\.0*)?\s*(%|[kmgt]?i?b)?\s*$/i.test(v)))) return { bytes: 0 };
  const bad = (why: string): ConfigError =>
    new ConfigError(`${where}: "${key}" ${why}, got ${JSON.stringify(v)} (examples: ${opts.fractions ? '90%, 0.9, 20GiB' : '50%, 200GiB'})`);
  let share: number | undefined;
  if (typeof v === 'string' && /%\s*$/.test(v)) {
    const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*$/.exec(v);
    if (!m) throw bad('is not a percentage');
    share = Number(m[1]) / 100;
  } else if (typeof v === 'number' && opts.fractions && v <= 4) {
    share = v;
  }
  if (share !== undefined) {
    if (!(share > 0) || share > opts.maxShare) throw bad(`must be a share above 0% and at most ${opts.maxShare * 100}%`);
    return { share };
  }
  const bytes = typeof v === 'string' ? parseSize(v, `${where}: ${key}`) : v;
  if (typeof bytes !== 'number' || !Number.isFinite(bytes) || bytes < 1) throw bad('must be a size or a percentage');
  return { bytes: Math.round(bytes) };
}

/** "64KiB", "4 MiB", "10GB", "1024" → bytes. */
export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?)b?\s*$/i.exec(text);
  if (!m) throw new ConfigError(`${what}: "${text}" is not a size (examples: 65536, 64KiB, 4MiB, 10GB)`);
  const power = ' kmgt'.indexOf((m[2] || ' ').toLowerCase());
  const base = m[3] || !m[2] ? 1024 : 1000;
  return Math.round(Number(m[1]) * base ** power);
}

export function validateListen(addr: string): string {
  if (addr.startsWith('unix:')) {
    if (addr.length <= 5) throw new ConfigError(`listen address "${addr}": a unix socket needs a path (unix:/run/reexec.sock)`);
    return addr;
  }
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):([0-9]{1,5})$/.exec(addr);
  if (!m || Number(m[2]) > 65535) throw new ConfigError(`listen address "${addr}" is not HOST:PORT or unix:PATH`);
  return addr;
}

/** metrics.listen: "HOST:PORT", or off (false, "off", "none"). */
function metricsListen(raw: Raw, where: string, dflt: string | null): string | null {
  const v = raw['listen'];
  if (v === undefined) return dflt;
  if (v === null || v === false || v === 'off' || v === 'none') return null;
  if (typeof v !== 'string' || v.startsWith('unix:')) throw new ConfigError(`${where}: "listen" must be HOST:PORT or off, got ${JSON.stringify(v)}`);
  try {
    return validateListen(v);
  } catch {
    throw new ConfigError(`${where}: "listen" must be HOST:PORT or off, got ${JSON.stringify(v)}`);
  }
}

const userPath = (p: string): string => resolve(p.replace(/^~(?=\/|$)/, homedir()));

/** tls: {cert, key, client-ca}, or off (null, false, "off"). */
function compileTls(v: unknown, where: string, dflt: TlsConfig | null): TlsConfig | null {
  if (v === undefined) return dflt;
  if (v === null || v === false || v === 'off' || v === 'none') return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${where}: "tls" must be a mapping with cert, key and optionally client-ca, or off`);
  const raw = v as Raw;
  const path = (key: string, required: boolean): string | null => {
    const p = raw[key];
    if (p === undefined || p === null) {
      if (required) throw new ConfigError(`${where}: tls needs "${key}" (a PEM file)${key === 'cert' || key === 'key' ? '; `reexec init --tls` creates one' : ''}`);
      return null;
    }
    if (typeof p !== 'string' || !p) throw new ConfigError(`${where}: tls "${key}" must be the path of a PEM file`);
    return userPath(p);
  };
  for (const k of Object.keys(raw)) if (!['cert', 'key', 'client-ca'].includes(k)) throw new ConfigError(`${where}: tls has no setting "${k}" (cert, key, client-ca)`);
  return { cert: path('cert', true)!, key: path('key', true)!, clientCa: path('client-ca', false) };
}

function compileAuth(raw: Raw, where: string, base: AuthConfig): AuthConfig {
  const tf = raw['token-file'];
  if (tf !== undefined && tf !== null && (typeof tf !== 'string' || !tf)) throw new ConfigError(`${where}: "token-file" must be a path`);
  let anonymous = base.anonymous;
  if (raw['anonymous'] !== undefined && raw['anonymous'] !== null) {
    try {
      anonymous = [...parseRights(raw['anonymous'])];
    } catch (err) {
      throw new ConfigError(`${where}: anonymous: ${(err as Error).message}`);
    }
  }
  for (const k of Object.keys(raw)) if (!['token-file', 'anonymous', 'local-users'].includes(k)) throw new ConfigError(`${where}: no setting "${k}" (token-file, anonymous, local-users)`);
  return { tokenFile: tf === undefined ? base.tokenFile : tf === null ? null : userPath(tf as string), anonymous, localUsers: localUsers(raw['local-users'], where, base.localUsers) };
}

/** auth.local-users: "any", or a list of user names or uids (a single name is a list of one). */
function localUsers(v: unknown, where: string, dflt: 'any' | string[]): 'any' | string[] {
  if (v === undefined) return dflt;
  if (v === null || v === false || v === 'none') return [];
  if (v === 'any' || v === true) return 'any';
  const list = Array.isArray(v) ? v : [v];
  const bad = list.find((x) => !((typeof x === 'string' && /^[A-Za-z0-9._][A-Za-z0-9._-]*\$?$/.test(x)) || (typeof x === 'number' && Number.isInteger(x) && x >= 0)));
  if (bad !== undefined) throw new ConfigError(`${where}: local-users must be "any" or a list of user names or uids (e.g. [alice, bob]), got ${JSON.stringify(bad)}`);
  return list.map(String);
}

/** A duration where 0 (or off) means "never". */
function optionalDuration(raw: Raw, key: string, where: string, dflt: number): number {
  const v = raw[key];
  if (v === 0 || v === '0' || v === 'off' || v === false) return 0;
  return v === undefined || v === null ? dflt : parseDuration(v, `${where}: ${key}`);
}

function compileLimits(raw: Raw, where: string, base: LimitsConfig): LimitsConfig {
  const maxConnections = raw['max-connections'] === 'auto' ? 'auto' : raw['max-connections'] === undefined || raw['max-connections'] === null ? base.maxConnections : num(raw, 'max-connections', where, 0);
  return {
    maxCallsPerClient: num(raw, 'max-calls-per-client', where, base.maxCallsPerClient),
    idleTimeoutSeconds: optionalDuration(raw, 'idle-timeout', where, base.idleTimeoutSeconds),
    maxTreeDepth: num(raw, 'max-tree-depth', where, base.maxTreeDepth, 1),
    maxTreeEntries: num(raw, 'max-tree-entries', where, base.maxTreeEntries, 1),
    maxConnections,
    maxConnectionsPerClient: num(raw, 'max-connections-per-client', where, base.maxConnectionsPerClient),
    handshakeTimeoutSeconds: optionalDuration(raw, 'handshake-timeout', where, base.handshakeTimeoutSeconds),
    connectionIdleTimeoutSeconds: optionalDuration(raw, 'connection-idle-timeout', where, base.connectionIdleTimeoutSeconds),
    keepaliveTimeSeconds: optionalDuration(raw, 'keepalive-time', where, base.keepaliveTimeSeconds),
    keepaliveTimeoutSeconds: raw['keepalive-timeout'] === undefined || raw['keepalive-timeout'] === null ? base.keepaliveTimeoutSeconds : parseDuration(raw['keepalive-timeout'], `${where}: keepalive-timeout`),
  };
}

/** Apply defaults to what a config file says, checking every value. */
export function compileConfig(raw: Raw, where = 'config', base: Config = defaultConfig()): Config {
  const listenRaw = raw['listen'];
  let listen = base.listen;
  let listenerTls = base.listenerTls;
  if (listenRaw !== undefined && listenRaw !== null) {
    const list = Array.isArray(listenRaw) ? listenRaw : [listenRaw];
    const isEntry = (x: unknown): boolean => typeof x === 'string' || (typeof x === 'object' && x !== null && typeof (x as Raw)['address'] === 'string');
    if (list.length === 0 || !list.every(isEntry)) throw new ConfigError(`${where}: "listen" must be an address or a list of them (an entry may be {address: HOST:PORT, tls: ...})`);
    listen = list.map((x) => validateListen(typeof x === 'string' ? x : ((x as Raw)['address'] as string)));
    listenerTls = {};
    for (const x of list) {
      if (typeof x === 'string') continue;
      const entry = x as Raw;
      for (const k of Object.keys(entry)) if (!['address', 'tls'].includes(k)) throw new ConfigError(`${where}: listen entry ${entry['address']}: no setting "${k}" (address, tls)`);
      if ('tls' in entry) listenerTls[entry['address'] as string] = compileTls(entry['tls'], `${where}: listen ${entry['address']}`, null);
    }
  }
  const dataDirRaw = raw['data-dir'];
  if (dataDirRaw !== undefined && typeof dataDirRaw !== 'string') throw new ConfigError(`${where}: "data-dir" must be a path`);
  const dataDir = dataDirRaw ? resolve(dataDirRaw.replace(/^~(?=\/|$)/, homedir())) : base.dataDir;
  const instRaw = raw['instances'];
  let instances = base.instances;
  if (instRaw !== undefined && instRaw !== null) {
    if (instRaw === '*') instances = '*';
    else if (Array.isArray(instRaw) && instRaw.every((x) => typeof x === 'string')) instances = instRaw as string[];
    else throw new ConfigError(`${where}: "instances" must be "*" or a list of instance names`);
  }
  const s = section(raw, 'storage', where);
  const g = section(raw, 'grpc', where);
  const l = section(raw, 'log', where);
  const m = section(raw, 'metrics', where);
  return {
    listen,
    dataDir,
    instances,
    storage: {
      inlineMaxBytes: num(s, 'inline-max-bytes', `${where}: storage`, base.storage.inlineMaxBytes),
      fsync: bool(s, 'fsync', `${where}: storage`, base.storage.fsync),
      maxBatchBytes: num(s, 'max-batch-bytes', `${where}: storage`, base.storage.maxBatchBytes, 1024),
      maxBytes: sizeOrShare(s, 'max-bytes', `${where}: storage`, base.storage.maxBytes, { fractions: false, maxShare: 1 }),
      highWatermark: sizeOrShare(s, 'high-watermark', `${where}: storage`, base.storage.highWatermark, { fractions: true, maxShare: 4 }),
      lowWatermark: sizeOrShare(s, 'low-watermark', `${where}: storage`, base.storage.lowWatermark, { fractions: true, maxShare: 4 }),
      hardLimit: sizeOrShare(s, 'hard-limit', `${where}: storage`, base.storage.hardLimit, { fractions: true, maxShare: 4 }),
      minFreeDisk: sizeOrShare(s, 'min-free-disk', `${where}: storage`, base.storage.minFreeDisk, { fractions: false, maxShare: 0.9, zeroMeansOff: true }),
      diskReserve:
        s['disk-reserve'] === 'auto'
          ? 'auto'
          : s['disk-reserve'] === undefined || s['disk-reserve'] === null
            ? base.storage.diskReserve
            : sizeOrShare(s, 'disk-reserve', `${where}: storage`, { bytes: 0 }, { fractions: false, maxShare: 0.5, zeroMeansOff: true }),
      // 0 (no grace at all) is allowed here, unlike other durations: tests and tiny disks want it.
      gracePeriodSeconds: s['grace-period'] === 0 || s['grace-period'] === '0' ? 0 : s['grace-period'] === undefined || s['grace-period'] === null ? base.storage.gracePeriodSeconds : parseDuration(s['grace-period'], `${where}: storage: grace-period`),
      stagingCacheMaxBytes: sizeOrShare(s, 'staging-cache-max-bytes', `${where}: storage`, base.storage.stagingCacheMaxBytes, { fractions: true, maxShare: 4 }),
    },
    grpc: {
      maxReceiveMessageBytes: num(g, 'max-receive-message-bytes', `${where}: grpc`, base.grpc.maxReceiveMessageBytes, 1024 * 1024),
      flowControlWindowBytes: num(g, 'flow-control-window-bytes', `${where}: grpc`, base.grpc.flowControlWindowBytes, 65535),
    },
    log: {
      format: oneOf(l, 'format', `${where}: log`, LOG_FORMATS, base.log.format),
      level: oneOf(l, 'level', `${where}: log`, ['debug', 'info', 'warn', 'error'] as const, base.log.level),
    },
    metrics: { listen: metricsListen(m, `${where}: metrics`, base.metrics.listen) },
    tls: compileTls(raw['tls'], where, base.tls),
    listenerTls,
    auth: compileAuth(section(raw, 'auth', where), `${where}: auth`, base.auth),
    limits: compileLimits(section(raw, 'limits', where), `${where}: limits`, base.limits),
    execution: compileExecution(section(raw, 'execution', where), `${where}: execution`, base.execution),
    history: compileHistory(section(raw, 'history', where), `${where}: history`, base.history),
    upstream: compileUpstream(raw['upstream'], where, base.upstream),
    source: base.source,
  };
}

/**
 * The configuration the CLI runs with: the file given (which must exist), else the default
 * file if there is one, else the embedded defaults.
 */
export function loadConfig(file?: string): Config {
  const path = file ?? defaultConfigPath();
  if (!existsSync(path)) {
    if (file) throw new ConfigError(`config file ${file} does not exist (create one with: reexec init --config ${file})`);
    return defaultConfig();
  }
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new ConfigError(`${path}: not valid YAML: ${(err as Error).message}`);
  }
  if (raw !== null && raw !== undefined && (typeof raw !== 'object' || Array.isArray(raw))) {
    throw new ConfigError(`${path}: the top level must be a mapping of settings`);
  }
  const config = compileConfig((raw ?? {}) as Raw, path);
  config.source = path;
  return config;
}
