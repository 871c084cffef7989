import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { COMPRESSOR_VALUES } from '../cas/compression.js';
import { connect, type ReapiClients } from '../client/reapi-client.js';
import type { ClientSecurity } from '../client/client-security.js';
import type { UpstreamConfig } from '../config/config.js';
import { SHA256, type DigestFunction } from '../digest/digest-function.js';
import { re } from '../proto.js';
import type { Logger } from '../util/logger.js';
import { UserError } from '../util/user-error.js';

/**
 * The one connection of a daemon to its upstream (README "Behind a cluster"): a gRPC channel
 * with a client per REAPI service, the upstream's checked capabilities, and its health.
 *
 * This is the seam the upstream's users share: the storage decorators of src/upstream/ (read
 * through, write behind) and execution forwarding. They call the upstream through `unary` and
 * `stream` (deadlines, health, errors naming the upstream), ask `usable` before trying it, and
 * read `health()` and `capabilities` for status and decisions.
 *
 * Health: 'up' once a call succeeded; 'down' after a call failed with UNAVAILABLE or
 * DEADLINE_EXCEEDED (the network or the upstream), after which calls are not attempted
 * (callers treat the upstream as missing) while a probe (GetCapabilities) retries with
 * backoff; 'refused' when its capabilities do not fit (it is never used then). Listeners of
 * onUp() run whenever it comes (back) up, e.g. to resume queued uploads.
 */

export type UpstreamState = 'starting' | 'up' | 'down' | 'refused';

export interface UpstreamHealth {
  url: string;
  instance: string;
  state: UpstreamState;
  /** Since when (ms since the epoch) it has been in this state. */
  since: number;
  /** The last failure (a call or the capabilities check), with the time it happened. */
  lastError?: string;
  lastErrorAt?: number;
}

/** What the upstream said it supports, as this daemon uses it. */
export interface UpstreamCapabilities {
  digestFunctions: string[];
  acUpdateEnabled: boolean;
  execEnabled: boolean;
  /** Its max_batch_total_size_bytes; 0 when it sets none. */
  maxBatchTotalSizeBytes: number;
  /** Compressors it accepts on ByteStream (names). */
  compressors: string[];
  /** Whether it serves Remote Asset (Fetch): unknown until a call says. */
  lowApiVersion: string;
  highApiVersion: string;
}

/** An error of a call to the upstream: the gRPC status of the upstream's answer, the message naming it. */
export class UpstreamError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
    this.name = 'UpstreamError';
  }
}

/** Codes meaning "the upstream (or the way to it) is not there", which mark it down. */
const UNREACHABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]);

export interface UpstreamCallOptions {
  /** Deadline of the call (default: the configured call timeout); for streams, of the gap between messages. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface UpstreamConnectionOptions {
  log: Logger;
  /** The digest function the daemon's clients use and the upstream must support (sha256). */
  digestFunction?: DigestFunction;
  /** Whether writes go to the upstream (then it must allow action cache updates). */
  push?: boolean;
  now?: () => number;
}

const compressorNames = Object.fromEntries(Object.entries(COMPRESSOR_VALUES).map(([name, value]) => [value, name])) as Record<number, string>;

export class UpstreamConnection {
  readonly url: string;
  readonly instance: string;
  readonly clients: ReapiClients;
  capabilities: UpstreamCapabilities | undefined;
  private state: UpstreamState = 'starting';
  private since: number;
  private lastError?: string;
  private lastErrorAt?: number;
  private readonly upListeners: Array<() => void> = [];
  private probeTimer: NodeJS.Timeout | undefined;
  private probeDelayMs: number;
  private closed = false;
  private readonly close_: () => void;
  private readonly now: () => number;
  private readonly log: Logger;

  private constructor(
    readonly config: UpstreamConfig,
    private readonly options: UpstreamConnectionOptions,
  ) {
    this.url = config.url;
    this.instance = config.instance;
    this.log = options.log;
    this.now = options.now ?? Date.now;
    this.since = this.now();
    this.probeDelayMs = config.retry.initialSeconds * 1000;
    const { close, ...clients } = connect(config.url, { 'grpc.max_receive_message_length': 64 * 1024 * 1024 }, securityOf(config));
    this.clients = clients;
    this.close_ = close;
  }

  /**
   * Connect and check the upstream's capabilities. A mismatch (no sha256, no action cache
   * updates while pushing) is a UserError: the daemon refuses to start. An upstream that
   * cannot be reached is not: the daemon starts, serves locally, and probes it with backoff.
   */
  static async open(config: UpstreamConfig, options: UpstreamConnectionOptions): Promise<UpstreamConnection> {
    const c = new UpstreamConnection(config, options);
    try {
      await c.checkCapabilities();
    } catch (err) {
      if (err instanceof UserError) {
        c.close();
        throw err;
      }
      c.log.warn(`upstream ${c.url} is not reachable (${(err as Error).message}): serving from the local store, probing it every ${config.retry.initialSeconds}-${config.retry.maxSeconds} s`);
      c.scheduleProbe();
    }
    return c;
  }

  /** The health, for status, metrics and decisions. */
  health(): UpstreamHealth {
    return { url: this.url, instance: this.instance, state: this.state, since: this.since, ...(this.lastError ? { lastError: this.lastError, lastErrorAt: this.lastErrorAt } : {}) };
  }

  /** Whether calls are worth trying now (up, or not yet known). */
  get usable(): boolean {
    return this.state === 'up' || this.state === 'starting';
  }

  /** Run `listener` whenever the upstream comes (back) up. */
  onUp(listener: () => void): void {
    this.upListeners.push(listener);
  }

  /** The default deadline of a short call, in ms. */
  get callTimeoutMs(): number {
    return this.config.callTimeoutSeconds * 1000;
  }

  /**
   * A unary call to the upstream with a deadline. Errors are UpstreamErrors naming the
   * upstream and the method; UNAVAILABLE and DEADLINE_EXCEEDED mark it down. A call while it
   * is down fails at once with UNAVAILABLE.
   */
  unary<Res>(service: Exclude<keyof ReapiClients, 'admin'>, method: string, request: object, options: UpstreamCallOptions = {}): Promise<Res> {
    if (!this.usable) return Promise.reject(this.downError(method));
    const client = this.clients[service] as grpc.Client & Record<string, any>;
    return new Promise<Res>((resolve, reject) => {
      const deadline = new Date(this.now() + (options.timeoutMs ?? this.callTimeoutMs));
      const onAbort = (): void => callHandle.cancel();
      const callHandle: grpc.ClientUnaryCall = client[method](request, new grpc.Metadata(), { deadline }, (err: grpc.ServiceError | null, res: Res) => {
        options.signal?.removeEventListener('abort', onAbort);
        if (err) reject(this.failed(method, err));
        else {
          this.succeeded();
          resolve(res);
        }
      });
      if (options.signal?.aborted) callHandle.cancel();
      else options.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * A server-streaming call (ByteStream.Read): its messages, with at most `timeoutMs` between
   * two of them (a stalled upstream ends the stream with DEADLINE_EXCEEDED and marks it
   * down). The consumer breaking off the iteration cancels the call.
   */
  async *serverStream<Res>(service: Exclude<keyof ReapiClients, 'admin'>, method: string, request: object, options: UpstreamCallOptions = {}): AsyncGenerator<Res> {
    if (!this.usable) throw this.downError(method);
    const client = this.clients[service] as grpc.Client & Record<string, any>;
    const stream: grpc.ClientReadableStream<Res> = client[method](request, new grpc.Metadata(), {});
    const gapMs = options.timeoutMs ?? this.callTimeoutMs;
    let stalled = false;
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        stalled = true;
        stream.cancel();
      }, gapMs);
    };
    const onAbort = (): void => stream.cancel();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    arm();
    try {
      for await (const message of stream) {
        arm();
        yield message as Res;
      }
      this.succeeded();
    } catch (err) {
      if (stalled) throw this.failed(method, { code: grpc.status.DEADLINE_EXCEEDED, details: `no message for ${gapMs} ms` } as grpc.ServiceError);
      throw this.failed(method, err as grpc.ServiceError);
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      stream.cancel();
    }
  }

  /**
   * A client-streaming call (ByteStream.Write): `messages` are written with backpressure, and
   * at most `timeoutMs` may pass without progress (a message accepted, or the answer).
   */
  clientStream<Req, Res>(service: Exclude<keyof ReapiClients, 'admin'>, method: string, messages: AsyncIterable<Req>, options: UpstreamCallOptions = {}): Promise<Res> {
    if (!this.usable) return Promise.reject(this.downError(method));
    const client = this.clients[service] as grpc.Client & Record<string, any>;
    const gapMs = options.timeoutMs ?? this.callTimeoutMs;
    return new Promise<Res>((resolve, reject) => {
      let stalled = false;
      let timer: NodeJS.Timeout | undefined;
      let settled = false;
      const arm = (): void => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          stalled = true;
          call.cancel();
        }, gapMs);
      };
      const onAbort = (): void => call.cancel();
      const finish = (): void => {
        settled = true;
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
      };
      const call: grpc.ClientWritableStream<Req> = client[method](new grpc.Metadata(), {}, (err: grpc.ServiceError | null, res: Res) => {
        finish();
        if (err) reject(stalled ? this.failed(method, { code: grpc.status.DEADLINE_EXCEEDED, details: `no progress for ${gapMs} ms` } as grpc.ServiceError) : this.failed(method, err));
        else {
          this.succeeded();
          resolve(res);
        }
      });
      options.signal?.addEventListener('abort', onAbort, { once: true });
      arm();
      void (async () => {
        try {
          for await (const m of messages) {
            if (settled) return;
            if (!call.write(m)) await new Promise<void>((r) => call.once('drain', () => r()));
            arm();
          }
          call.end();
        } catch (err) {
          // The source failed (a local read): abandon the upload.
          call.cancel();
          if (!settled) {
            finish();
            reject(new UpstreamError(grpc.status.INTERNAL, `uploading to upstream ${this.url}: ${(err as Error).message}`));
          }
        }
      })();
    });
  }

  /** Stop probing and close the channel. */
  close(): void {
    this.closed = true;
    clearTimeout(this.probeTimer);
    this.close_();
  }

  /** Ask the upstream what it supports and check it fits; sets the state. */
  private async checkCapabilities(): Promise<void> {
    const client = this.clients.capabilities as grpc.Client & Record<string, any>;
    const caps = await new Promise<re.ServerCapabilities>((resolve, reject) =>
      client['GetCapabilities']({ instanceName: this.instance }, new grpc.Metadata(), { deadline: new Date(this.now() + this.callTimeoutMs) }, (err: grpc.ServiceError | null, res: re.ServerCapabilities) =>
        err ? reject(this.failed('GetCapabilities', err)) : resolve(res),
      ),
    );
    const cache = caps.cacheCapabilities;
    const names = (cache?.digestFunctions ?? []).map((v) => re.DigestFunction.Value[v]?.toLowerCase() ?? String(v));
    const version = (v: { major?: number | null; minor?: number | null } | null | undefined): string => (v ? `${v.major ?? 0}.${v.minor ?? 0}` : '?');
    const found: UpstreamCapabilities = {
      // An old server lists none: SHA-256 is what it means.
      digestFunctions: names.length ? names : ['sha256'],
      acUpdateEnabled: !!cache?.actionCacheUpdateCapabilities?.updateEnabled,
      execEnabled: !!caps.executionCapabilities?.execEnabled,
      maxBatchTotalSizeBytes: Number(cache?.maxBatchTotalSizeBytes ?? 0),
      compressors: (cache?.supportedCompressors ?? []).map((v) => compressorNames[v] ?? String(v)),
      lowApiVersion: version(caps.lowApiVersion),
      highApiVersion: version(caps.highApiVersion),
    };
    this.capabilities = found;
    const fn = (this.options.digestFunction ?? SHA256).name;
    const problems: string[] = [];
    if (!cache) problems.push('it has no CAS (no cache_capabilities)');
    if (!found.digestFunctions.includes(fn)) problems.push(`it does not support the ${fn} digest function (it supports ${found.digestFunctions.join(', ')})`);
    if (this.options.push !== false && cache && !found.acUpdateEnabled) problems.push('it does not allow action cache updates while upstream.push is true (set push: false to use it read-only, or give this daemon a token that may write)');
    this.options.log.info(
      `upstream ${this.url}${this.instance ? ` (instance "${this.instance}")` : ''}: digest functions ${found.digestFunctions.join(', ')}; action cache updates ${found.acUpdateEnabled ? 'allowed' : 'refused'}; execution ${found.execEnabled ? 'enabled' : 'disabled'}; batches up to ${found.maxBatchTotalSizeBytes ? `${found.maxBatchTotalSizeBytes} bytes` : 'any size'}; compressors ${found.compressors.join(', ') || 'identity only'}; REAPI ${found.lowApiVersion}-${found.highApiVersion}`,
      { upstream: this.url, capabilities: found },
    );
    if (problems.length) {
      const message = `upstream ${this.url} does not fit: ${problems.join('; ')}`;
      this.setState('refused', message);
      throw new UserError(message, 'Fix the upstream section of the config (README "Behind a cluster"), or remove it.');
    }
    this.succeeded();
  }

  private downError(method: string): UpstreamError {
    const why = this.state === 'refused' ? 'refused (capabilities do not fit)' : `down since ${new Date(this.since).toISOString()}`;
    return new UpstreamError(grpc.status.UNAVAILABLE, `upstream ${this.url} is ${why}${this.lastError ? `: ${this.lastError}` : ''} (${method} not sent)`);
  }

  private failed(method: string, err: grpc.ServiceError): UpstreamError {
    const code = err.code ?? grpc.status.UNKNOWN;
    const message = `upstream ${this.url}: ${method}: ${grpc.status[code] ?? code}: ${err.details || err.message}`;
    if (UNREACHABLE.has(code) && !this.closed && this.state !== 'refused') {
      const wasUsable = this.usable;
      this.setState('down', message);
      if (wasUsable) {
        this.log.warn(`${message}: serving from the local store until it is back`);
        this.scheduleProbe();
      }
    }
    return new UpstreamError(code, message);
  }

  private succeeded(): void {
    if (this.state === 'up' || this.state === 'refused') return;
    const wasDown = this.state === 'down';
    this.setState('up');
    this.probeDelayMs = this.config.retry.initialSeconds * 1000;
    if (wasDown) this.log.info(`upstream ${this.url} is back`);
    for (const l of this.upListeners) l();
  }

  private setState(state: UpstreamState, error?: string): void {
    if (error) {
      this.lastError = error;
      this.lastErrorAt = this.now();
    }
    if (state === this.state) return;
    this.state = state;
    this.since = this.now();
  }

  /** Probe with GetCapabilities after the current backoff; again, longer, while it fails. */
  private scheduleProbe(): void {
    if (this.closed || this.probeTimer) return;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      if (this.closed) return;
      this.checkCapabilities().then(
        () => undefined,
        (err: Error) => {
          if (err instanceof UserError) {
            this.log.error(err.message);
            return;
          }
          this.setState('down', err.message);
          this.probeDelayMs = Math.min(this.probeDelayMs * 2, this.config.retry.maxSeconds * 1000);
          this.scheduleProbe();
        },
      );
    }, this.probeDelayMs);
    this.probeTimer.unref();
  }
}

/** TLS files and the token of the upstream section, read now (a missing file is the user's error). */
function securityOf(config: UpstreamConfig): ClientSecurity {
  const read = (path: string, what: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new UserError(`upstream ${what} ${path} cannot be read: ${(err as Error).message}`, 'Fix the path in the upstream section of the config.');
    }
  };
  const security: ClientSecurity = {};
  if (config.url.startsWith('grpcs://')) security.tls = true;
  if (config.serverCert) security.serverCa = read(config.serverCert, 'server-cert');
  if (config.clientCert && config.clientKey) {
    security.clientCert = read(config.clientCert, 'client-cert');
    security.clientKey = read(config.clientKey, 'client-key');
  }
  if (config.tokenFile) {
    const token = read(config.tokenFile, 'token-file').toString('utf8').split('\n')[0]!.trim();
    if (!token) throw new UserError(`upstream token-file ${config.tokenFile} is empty`, 'Put the token on its first line.');
    security.token = token;
  }
  return security;
}
