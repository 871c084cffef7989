import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, platform, arch, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { ClientSecurity } from '../client/client-security.js';
import { connect, type ReapiClients } from '../client/reapi-client.js';
import { scratchDaemonConfig, type Config } from '../config/config.js';
import { Daemon } from '../daemon/daemon.js';
import type { re } from '../proto.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { acSteps, runAc } from './ac.js';
import { casLargeSteps, runCasLarge } from './cas-large.js';
import { casSmallSteps, runCasSmall } from './cas-small.js';
import { execSteps, runExec } from './exec.js';
import { historySteps, runHistoryBench } from './history.js';
import { BenchProgress } from './progress.js';
import { CLIENT_CHANNEL_OPTIONS, RawGrpcBaseline } from './raw-grpc.js';
import { MiB } from './stats.js';
import { unsupportedReason, UnsupportedError, type SuiteProgress } from './support.js';
import type { BenchResult, BenchTarget, HostInfo, SuiteName, SuiteResult } from './types.js';

export interface BenchOptions {
  suites: readonly SuiteName[];
  /** The concurrency sweep: calls, streams or actions in flight at once. */
  concurrency: number[];
  repeat: number;
  /** cas-large: blob sizes (at concurrency 1), the size of the concurrency sweep, bytes per stream message, bytes moved per cell at least. */
  sizes: number[];
  sweepSize: number;
  chunkBytes: number;
  minBytesPerCell: number;
  /** cas-small: blob sizes, most blobs per batch request, batch requests per repetition and concurrency. */
  blobSizes: number[];
  blobsPerBatch: number;
  batches: number;
  /** ac: calls of each kind per repetition and concurrency. */
  acOps: number;
  /** exec: no-op actions per repetition and concurrency, files of the staging input root, compile actions per repetition and concurrency. */
  actions: number;
  stagingFiles: number;
  compiles: number;
  /** history: rounds of no-op batches on the history-on and history-off daemons. */
  historyRounds: number;
  /** Any REAPI server ("grpc[s]://host:port", "host:port", "unix:/path"); default: a temporary reexec daemon in this process. */
  endpoint?: string;
  /** TLS and token for `endpoint`. */
  security?: ClientSecurity;
  /** `endpoint` is the configured local daemon, from this config file. */
  localConfig?: string;
  instance: string;
  /** Settings of the temporary daemon (storage, grpc, execution); its listen address, data dir, TLS and tokens are the bench's own. */
  config?: Config;
  /** Where the temporary daemon's data dir and the local baselines' files go (removed afterwards). */
  tmpRoot?: string;
  progress?: BenchProgress;
  /** The temporary daemon's logger. */
  log?: Logger;
  /** Told the temporary data dir as soon as it exists (so that an interrupted run can remove it). */
  onTempDir?: (dir: string) => void;
}

/** Two points of the sweep on any machine: one call at a time, and twice as many as there are cores. */
export const defaultConcurrency = (): number[] => [...new Set([1, 2 * Math.max(1, cpus().length)])];

export const DEFAULT_BENCH_OPTIONS: Omit<BenchOptions, 'suites' | 'concurrency'> = {
  repeat: 3,
  sizes: [1 * MiB, 16 * MiB, 256 * MiB, 1024 * MiB],
  sweepSize: 16 * MiB,
  chunkBytes: MiB,
  minBytesPerCell: 64 * MiB,
  blobSizes: [100, 4096, 65536],
  blobsPerBatch: 1000,
  batches: 20,
  acOps: 200,
  actions: 40,
  stagingFiles: 10_000,
  compiles: 12,
  historyRounds: 12,
  instance: '',
};

/** The bench cannot reach or use its target (a user-fixable problem). */
export class BenchTargetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BenchTargetError';
  }
}

export function hostInfo(): HostInfo {
  const c = cpus();
  return {
    cpus: c.length,
    cpuModel: c[0]?.model.trim() ?? 'unknown',
    node: process.version,
    platform: platform(),
    arch: arch(),
    totalMemBytes: totalmem(),
    loadAvg: loadAvgNow(),
  };
}

export const loadAvgNow = (): number[] => loadavg().map((x) => Math.round(x * 100) / 100);

/** Ask the target what it offers; refuse early when it is unreachable or has no usable CAS. */
async function capabilities(clients: ReapiClients, endpoint: string, instance: string): Promise<re.IServerCapabilities> {
  const deadline = new Date(Date.now() + 15_000);
  let caps: re.IServerCapabilities;
  try {
    caps = await new Promise((resolve, reject) =>
      clients.capabilities['GetCapabilities']!({ instanceName: instance }, new grpc.Metadata(), { deadline }, (err: grpc.ServiceError | null, res: re.IServerCapabilities) =>
        err ? reject(err) : resolve(res),
      ),
    );
  } catch (err) {
    throw new BenchTargetError(`cannot use ${endpoint} (instance "${instance}"): GetCapabilities failed: ${(err as Error).message}`);
  }
  const cache = caps.cacheCapabilities;
  if (!cache) throw new BenchTargetError(`${endpoint} has no CAS (GetCapabilities lists no cache capabilities)`);
  if (cache.digestFunctions && cache.digestFunctions.length > 0 && !cache.digestFunctions.includes(1)) {
    throw new BenchTargetError(`${endpoint} does not accept SHA-256 digests, which the bench uses`);
  }
  return caps;
}

export function stepsOf(name: SuiteName, o: BenchOptions): number {
  switch (name) {
    case 'cas-small':
      return casSmallSteps({ blobSizes: o.blobSizes, concurrency: o.concurrency, repeat: o.repeat });
    case 'cas-large':
      return casLargeSteps(o);
    case 'ac':
      return acSteps(o);
    case 'exec':
      return execSteps(o);
    case 'history':
      return historySteps({ concurrency: o.concurrency, rounds: o.historyRounds });
  }
}

/** One target of a run: an endpoint with its TLS and token, the configured local daemon, or (no endpoint) a temporary daemon. */
export interface TargetSpec {
  endpoint?: string;
  security?: ClientSecurity;
  /** `endpoint` is the configured local daemon, from this config file. */
  localConfig?: string;
}

/** A target the suites can run against: connected, its capabilities known. */
export interface OpenTarget {
  target: BenchTarget;
  clients: ReapiClients;
  caps: re.IServerCapabilities;
  maxBatchBytes: number;
  /** Where the disk baselines write their files, and whether they fsync. */
  disk: { dir: string; fsync: boolean; where: string };
}

/**
 * Connect to a target (starting the temporary daemon when `spec` has no endpoint) and ask what
 * it offers; what must be undone afterwards goes into `cleanups`.
 */
export async function openTarget(spec: TargetSpec, opts: BenchOptions, progress: BenchProgress, cleanups: (() => Promise<void> | void)[]): Promise<OpenTarget> {
  const scratchRoot = opts.tmpRoot ?? tmpdir();
  let target: BenchTarget;
  let endpoint: string;
  let disk: { dir: string; fsync: boolean; where: string };
  if (spec.endpoint) {
    endpoint = spec.endpoint;
    const external = 'its storage settings (fsync...) and workers are its own; the baselines run in the bench process on this machine';
    target = spec.localConfig
      ? { kind: 'local', endpoint, instance: opts.instance, config: spec.localConfig, note: `the configured local daemon (from ${spec.localConfig}): ${external}` }
      : {
          kind: 'endpoint',
          endpoint,
          instance: opts.instance,
          tls: !!spec.security?.tls || /^(grpcs|https):\/\//.test(endpoint),
          token: !!spec.security?.token,
          note: `an external server: ${external}`,
        };
    disk = { dir: scratchRoot, fsync: true, where: `in ${scratchRoot} on this machine` };
  } else {
    const dataDir = mkdtempSync(join(scratchRoot, 'reexec-bench-'));
    // As root the daemon runs actions as an unprivileged user, which must pass through to the data dir.
    chmodSync(dataDir, 0o711);
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    opts.onTempDir?.(dataDir);
    // The bench's own loopback listener: no TLS, no tokens, no metrics port.
    const config = scratchDaemonConfig(dataDir, opts.config);
    // Workers only when the exec suite runs (a storage benchmark needs none).
    const execution = opts.suites.includes('exec');
    config.execution.enabled = execution;
    progress.info(`starting a temporary reexec daemon in this process (data in ${dataDir}, fsync ${config.storage.fsync ? 'on' : 'off'}, execution ${execution ? 'on' : 'off'})`);
    const daemon = await Daemon.start(config, opts.log ?? silentLogger);
    cleanups.push(() => daemon.stop(5_000));
    endpoint = daemon.addresses[0]!;
    disk = { dir: dataDir, fsync: config.storage.fsync, where: "in the daemon's data dir" };
    target = {
      kind: 'temporary',
      endpoint,
      instance: opts.instance,
      fsync: config.storage.fsync,
      execution,
      dataDir,
      note:
        `a temporary reexec daemon in the bench's own process (client, server and baselines share one event loop), data dir removed afterwards; ` +
        `fsync ${config.storage.fsync ? 'on: large blobs are fsynced before they become visible' : 'off'}` +
        (execution ? `; execution on, worker pools ${config.execution.pools === 'auto' ? 'auto (a slot per core)' : config.execution.pools.map((p) => `${p.name}×${p.slots}`).join(', ')}` : ''),
    };
  }
  const clients = connect(endpoint, CLIENT_CHANNEL_OPTIONS, spec.security ?? {});
  cleanups.push(() => clients.close());
  const caps = await capabilities(clients, endpoint, opts.instance);
  return { target, clients, caps, maxBatchBytes: Number(caps.cacheCapabilities?.maxBatchTotalSizeBytes ?? 0), disk };
}

/** One suite against an open target, `repeat` times; a call the endpoint does not offer makes it unsupported, not a failure. */
export async function runSuite(name: SuiteName, t: OpenTarget, raw: RawGrpcBaseline, opts: BenchOptions, p: SuiteProgress, repeat: number): Promise<SuiteResult> {
  const { clients, caps, maxBatchBytes, disk } = t;
  const common = { clients, instance: opts.instance, raw, repeat, concurrency: opts.concurrency, progress: p };
  try {
    switch (name) {
      case 'cas-small':
        return await runCasSmall({ ...common, blobSizes: opts.blobSizes, blobsPerBatch: opts.blobsPerBatch, batches: opts.batches, maxBatchBytes });
      case 'cas-large':
        return await runCasLarge({ ...common, sizes: opts.sizes, sweepSize: opts.sweepSize, chunkBytes: opts.chunkBytes, minBytesPerCell: opts.minBytesPerCell, disk });
      case 'ac':
        return await runAc({ ...common, ops: opts.acOps, updateEnabled: caps.cacheCapabilities?.actionCacheUpdateCapabilities?.updateEnabled !== false });
      case 'exec': {
        const ex = caps.executionCapabilities;
        return await runExec({
          ...common,
          execEnabled: !!ex?.execEnabled,
          execDisabledReason: ex ? 'GetCapabilities says exec_enabled is false' : 'GetCapabilities lists no execution capabilities',
          maxBatchBytes,
          actions: opts.actions,
          stagingFiles: opts.stagingFiles,
          compiles: opts.compiles,
          disk,
        });
      }
      case 'history':
        if (t.target.kind !== 'temporary') {
          return { name, status: 'unsupported', unsupported: [{ what: 'history', reason: 'it compares two temporary daemons of its own (history on and off): run it without --endpoint or --local' }], params: {}, metrics: [], checks: {} };
        }
        return await runHistoryBench({ config: opts.config, tmpRoot: opts.tmpRoot ?? tmpdir(), concurrency: opts.concurrency, rounds: opts.historyRounds, actions: opts.actions, progress: p, log: opts.log ?? silentLogger });
    }
  } catch (err) {
    // A call the endpoint does not offer, met outside the places a suite expects it.
    const unsupported = err instanceof UnsupportedError ? err.unsupported : unsupportedReason(err) ? { what: name, reason: unsupportedReason(err)! } : undefined;
    if (!unsupported) throw err;
    return { name, status: 'unsupported', unsupported: [unsupported], params: {}, metrics: [], checks: {} };
  }
}

export const BASELINES_NOTE =
  'measured in this run on this machine, each right before the figure it is compared with: a raw grpc-js server and client in the bench process ' +
  '(identity serializers, 16 MiB HTTP/2 windows on both ends, the same message sizes and concurrency), SHA-256 with node crypto, plain file writes of the same bytes, ' +
  '`bwrap --unshare-all --ro-bind / / /bin/true` spawned with the same concurrency, and the same gcc run without a sandbox; figures are medians over the repetitions';

/**
 * Run the suites against a target (a temporary in-process daemon unless opts.endpoint), each
 * figure next to a baseline measured in the same run on this machine.
 */
export async function runBench(opts: BenchOptions): Promise<BenchResult> {
  const progress = opts.progress ?? new BenchProgress(undefined);
  const startedAt = new Date();
  const t0 = process.hrtime.bigint();
  const host = hostInfo();
  const cleanups: (() => Promise<void> | void)[] = [];
  try {
    const t = await openTarget({ endpoint: opts.endpoint, security: opts.security, localConfig: opts.localConfig }, opts, progress, cleanups);
    const raw = await RawGrpcBaseline.start();
    cleanups.push(() => raw.close());

    const suites: SuiteResult[] = [];
    progress.info(`running ${opts.suites.join(', ')} against ${t.target.endpoint} (${opts.repeat} repetition${opts.repeat === 1 ? '' : 's'}, concurrency ${opts.concurrency.join(', ')})`);
    for (const name of opts.suites) suites.push(await runSuite(name, t, raw, opts, progress.suite(name, stepsOf(name, opts)), opts.repeat));
    progress.done();
    return {
      format: 'reexec-bench/1',
      host: { ...host, loadAvgEnd: loadAvgNow() },
      target: t.target,
      startedAt: startedAt.toISOString(),
      durationSeconds: Number(process.hrtime.bigint() - t0) / 1e9,
      repeat: opts.repeat,
      concurrency: opts.concurrency,
      baselines: BASELINES_NOTE,
      suites,
    };
  } finally {
    progress.done();
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  }
}
