import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, platform, arch, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { connect, type ReapiClients } from '../client/reapi-client.js';
import { defaultConfig, type Config } from '../config/config.js';
import { Daemon } from '../daemon/daemon.js';
import type { re } from '../proto.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { runCasLarge } from './cas-large.js';
import { runCasSmall } from './cas-small.js';
import { CLIENT_CHANNEL_OPTIONS, RawGrpcBaseline } from './raw-grpc.js';
import { MiB } from './stats.js';
import type { BenchResult, BenchTarget, HostInfo, SuiteName, SuiteResult } from './types.js';

export interface BenchOptions {
  suites: readonly SuiteName[];
  /** cas-large: bytes of the blob. */
  sizeBytes: number;
  /** cas-large: bytes per stream message. */
  chunkBytes: number;
  /** cas-small: blobs per batch request, bytes per blob, batch requests per repetition. */
  blobsPerBatch: number;
  blobBytes: number;
  batches: number;
  repeat: number;
  /** Any REAPI server ("grpc://host:port", "host:port", "unix:/path"); default: a temporary reexec daemon in this process. */
  endpoint?: string;
  instance: string;
  /** Settings of the temporary daemon (storage, grpc); its listen address and data dir are the bench's own. */
  config?: Config;
  /** Where the temporary daemon's data dir goes (removed afterwards). */
  tmpRoot?: string;
  /** Progress lines (the CLI prints them on stderr). */
  progress?: (line: string) => void;
  /** The temporary daemon's logger. */
  log?: Logger;
  /** Told the temporary data dir as soon as it exists (so that an interrupted run can remove it). */
  onTempDir?: (dir: string) => void;
}

export const DEFAULT_BENCH_OPTIONS: Omit<BenchOptions, 'suites'> = {
  sizeBytes: 256 * MiB,
  chunkBytes: MiB,
  blobsPerBatch: 1000,
  blobBytes: 100,
  batches: 20,
  repeat: 3,
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
    loadAvg: loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** Ask the target what it supports; refuse early when the suites could not run against it. */
async function checkTarget(clients: ReapiClients, endpoint: string, instance: string, opts: BenchOptions): Promise<void> {
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
  const max = Number(cache.maxBatchTotalSizeBytes ?? 0);
  const batchBytes = opts.blobsPerBatch * (opts.blobBytes + 100);
  if (opts.suites.includes('cas-small') && max > 0 && batchBytes > max) {
    throw new BenchTargetError(`${endpoint} takes batches of at most ${max} bytes; ${opts.blobsPerBatch} blobs of ${opts.blobBytes} B do not fit (use fewer blobs per batch)`);
  }
}

/**
 * Run the storage suites against a target (a temporary in-process daemon unless
 * opts.endpoint), each figure next to a baseline measured in the same run.
 */
export async function runBench(opts: BenchOptions): Promise<BenchResult> {
  const progress = opts.progress ?? (() => undefined);
  const startedAt = new Date();
  const t0 = process.hrtime.bigint();
  const host = hostInfo();
  const cleanups: (() => Promise<void> | void)[] = [];
  try {
    let target: BenchTarget;
    let endpoint: string;
    let disk: { dir: string; fsync: boolean; where: string };
    if (opts.endpoint) {
      endpoint = opts.endpoint;
      target = {
        kind: 'endpoint',
        endpoint,
        instance: opts.instance,
        note: 'an external server: its storage settings (fsync...) are its own; the baselines run in this process',
      };
      const dir = opts.tmpRoot ?? tmpdir();
      disk = { dir, fsync: true, where: `in ${dir} on this machine` };
    } else {
      const dataDir = mkdtempSync(join(opts.tmpRoot ?? tmpdir(), 'reexec-bench-'));
      cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
      opts.onTempDir?.(dataDir);
      const config = structuredClone(opts.config ?? defaultConfig());
      config.listen = ['127.0.0.1:0'];
      config.dataDir = dataDir;
      config.instances = '*';
      // A storage benchmark needs no execution engine (when this build has one): start no workers.
      const execution = (config as { execution?: { enabled: boolean } }).execution;
      if (execution) execution.enabled = false;
      progress(`starting a temporary reexec daemon in this process (data in ${dataDir}, fsync ${config.storage.fsync ? 'on' : 'off'})`);
      const daemon = await Daemon.start(config, opts.log ?? silentLogger);
      cleanups.push(() => daemon.stop(5_000));
      endpoint = daemon.addresses[0]!;
      disk = { dir: dataDir, fsync: config.storage.fsync, where: "in the daemon's data dir" };
      target = {
        kind: 'in-process',
        endpoint,
        instance: opts.instance,
        fsync: config.storage.fsync,
        dataDir,
        note: `a temporary reexec daemon in the bench's own process (client, server and baselines share one event loop), data dir removed afterwards; fsync ${config.storage.fsync ? 'on: large blobs are fsynced before they become visible' : 'off'}`,
      };
    }
    const clients = connect(endpoint, CLIENT_CHANNEL_OPTIONS);
    cleanups.push(() => clients.close());
    await checkTarget(clients, endpoint, opts.instance, opts);
    const raw = await RawGrpcBaseline.start();
    cleanups.push(() => raw.close());

    const suites: SuiteResult[] = [];
    for (const name of opts.suites) {
      progress(`running ${name} against ${endpoint} (${opts.repeat} repetition${opts.repeat === 1 ? '' : 's'})`);
      if (name === 'cas-large') {
        suites.push(await runCasLarge({ clients, instance: opts.instance, raw, sizeBytes: opts.sizeBytes, chunkBytes: opts.chunkBytes, repeat: opts.repeat, progress, disk }));
      } else {
        suites.push(
          await runCasSmall({
            clients,
            instance: opts.instance,
            raw,
            blobsPerBatch: opts.blobsPerBatch,
            blobBytes: opts.blobBytes,
            batches: opts.batches,
            repeat: opts.repeat,
            progress,
          }),
        );
      }
    }
    return {
      host,
      target,
      startedAt: startedAt.toISOString(),
      durationSeconds: Number(process.hrtime.bigint() - t0) / 1e9,
      repeat: opts.repeat,
      baselines:
        'measured in this run on this machine: a raw grpc-js server and client in this process (identity serializers, 16 MiB HTTP/2 windows on both ends, the same message sizes), SHA-256 with node crypto, and a plain file write of the same bytes (the disk); figures are medians over the repetitions',
      suites,
    };
  } finally {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  }
}
