import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Http2Session } from 'node:http2';
import { AccessPolicy } from '../auth/access-policy.js';
import { LocalUsers } from '../auth/local-users.js';
import { SocketOwners } from '../auth/socket-owners.js';
import { CallGuard } from '../auth/call-guard.js';
import { TokenFile } from '../auth/token-file.js';
import { bearerToken } from '../auth/access-policy.js';
import { DaemonHistory } from '../history/daemon-history.js';
import { historyDefinition, historyService } from '../services/history-service.js';
import type { BlobStore } from '../cas/blob-store.js';
import { UploadRegistry } from '../cas/upload-registry.js';
import type { Config } from '../config/config.js';
import { InstancePolicy } from '../digest/instance-name.js';
import { ExecutionEngine } from '../execution/execution-engine.js';
import { formatBytes, resolveStorageBudget } from '../gc/storage-budget.js';
import { StorageGc } from '../gc/storage-gc.js';
import { actionCacheDefinition, actionCacheService } from '../services/action-cache-service.js';
import { adminDefinition, adminService } from '../services/admin-service.js';
import { collectStatus } from '../status/collect-status.js';
import { executionDefinition, executionServices, operationsDefinition } from '../services/execution-service.js';
import { assetServices, fetchDefinition, pushDefinition } from '../services/asset-service.js';
import { byteStreamDefinition, byteStreamService } from '../services/bytestream-service.js';
import { capabilitiesDefinition, capabilitiesService } from '../services/capabilities-service.js';
import { BATCH_FRAMING_ROOM, CLIENT_RECEIVE_LIMIT, casDefinition, casService } from '../services/cas-service.js';
import type { CallContext } from '../services/grpc-adapters.js';
import { NestedApiServers } from '../services/nested-api-server.js';
import { botsDefinition, botsService } from '../services/bots-service.js';
import type { Right } from '../auth/rights.js';
import type { JobOptions } from '../execution/job-builder.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import { MetricsServer } from '../metrics/metrics-server.js';
import { Telemetry } from '../metrics/telemetry.js';
import { DiskSpace } from '../store/disk-space.js';
import type { LmdbEnv } from '../store/lmdb-env.js';
import { UpstreamConnection } from '../upstream/upstream-connection.js';
import { collectUpstreamStatus } from '../upstream/upstream-status.js';
import { createStorage, type LocalBlobStore, type Storage } from '../storage/create-storage.js';
import type { StoreSizes } from '../metrics/store-usage.js';
import type { Logger } from '../util/logger.js';
import { pausePoint } from '../util/test-hooks.js';
import { openDataDir } from './data-dir-format.js';
import { autoMaxConnections, ConnectionGuard } from './connection-guard.js';
import { DataDirLock } from './data-dir-lock.js';
import { exposureWarnings, tlsFor } from './exposure.js';
import { bindAddress, createGrpcServer, unixSocketPath } from './grpc-server.js';

import { VERSION } from './version.js';

export { VERSION };

/** What actions must never see of the daemon besides its data dir: unix sockets, token file, TLS private keys. */
export function daemonSecrets(config: Config): string[] {
  const sockets = config.listen.filter((a) => a.startsWith('unix:')).map((a) => resolve(unixSocketPath(a)));
  const keys = [config.tls, ...Object.values(config.listenerTls)].flatMap((t) => (t ? [t.key] : []));
  return [...sockets, ...(config.auth.tokenFile ? [config.auth.tokenFile] : []), ...keys];
}

/** The services the daemon registers, by full name (for health and logs). */
export const SERVICE_NAMES = [
  'build.bazel.remote.execution.v2.Capabilities',
  'build.bazel.remote.execution.v2.ContentAddressableStorage',
  'build.bazel.remote.execution.v2.ActionCache',
  'google.bytestream.ByteStream',
  'build.bazel.remote.asset.v1.Fetch',
  'build.bazel.remote.asset.v1.Push',
  'build.bazel.remote.execution.v2.Execution',
  'google.longrunning.Operations',
  'google.devtools.remoteworkers.v1test2.Bots',
  'reexec.admin.v1.Admin',
  'reexec.admin.v1.History',
];

const PROTO_DIR = fileURLToPath(new URL('../../protos', import.meta.url));
const REFLECTED_PROTOS = [
  'build/bazel/remote/execution/v2/remote_execution.proto',
  'build/bazel/remote/asset/v1/remote_asset.proto',
  'google/bytestream/bytestream.proto',
  'google/longrunning/operations.proto',
  'google/devtools/remoteworkers/v1test2/bots.proto',
  'reexec/admin/v1/admin.proto',
];

/**
 * The composition root: opens the data dir, builds the stores and their decorators, registers
 * the services and listens. Shutdown runs in reverse order: stop accepting, drain calls,
 * flush and close LMDB, release the lock.
 */
export class Daemon {
  private state: 'running' | 'stopping' | 'stopped' = 'running';
  readonly startedAt = new Date();

  private constructor(
    readonly config: Config,
    readonly addresses: string[],
    private readonly server: grpc.Server,
    private readonly env: LmdbEnv,
    private readonly lock: DataDirLock,
    private readonly uploads: UploadRegistry,
    private readonly health: HealthImplementation,
    readonly cas: BlobStore,
    readonly casBase: LocalBlobStore,
    private readonly log: Logger,
    readonly execution: ExecutionEngine | undefined,
    /** Metrics and recent activity; the garbage collector reports its runs to telemetry.gc. */
    readonly telemetry: Telemetry,
    readonly storage: Storage,
    /** Serves /metrics, unless metrics are off or their address was taken. */
    readonly metricsServer: MetricsServer | undefined,
    /** Keeps the store within its budget: background eviction, `reexec gc`. */
    readonly gc: StorageGc,
    /** Counts and limits connections. */
    readonly connections: ConnectionGuard,
    /** The action history (undefined: history.enabled is false). */
    readonly history: DaemonHistory | undefined,
    /** The connection to the upstream cluster (undefined: no upstream configured). */
    readonly upstream: UpstreamConnection | undefined,
  ) {}

  static async start(config: Config, log: Logger): Promise<Daemon> {
    const lock = DataDirLock.acquire(config.dataDir);
    let env: LmdbEnv | undefined;
    let server: grpc.Server | undefined;
    let engineForCleanup: ExecutionEngine | undefined;
    let storage: Storage | undefined;
    let connections: ConnectionGuard | undefined;
    let upstream: UpstreamConnection | undefined;
    try {
      // Checked before anything opens: an upstream that does not fit is the user's error; one
      // that is down is not (the daemon serves locally and probes it).
      if (config.upstream) upstream = await UpstreamConnection.open(config.upstream, { log, push: config.upstream.push });
      const budget = await resolveStorageBudget(config);
      const space = new DiskSpace(config.dataDir, { reserveBytes: budget.reserveBytes, log });
      // Written in the background (64 MiB by default); until it is in place, uploads leave room for it.
      void space.restoreReserve();
      env = await openDataDir(config.dataDir, log, undefined, { space });
      // Told why eviction cannot make room, once the collector exists.
      let whyNothingEvictable: () => string | undefined = () => undefined;
      // Telemetry reads the store's sizes only when scraped or polled: by then the storage exists.
      let sizes = (): StoreSizes => ({ casBlobs: 0, casBytes: 0, bytesMeasuredAt: Date.now(), acEntries: 0, disk: null });
      const telemetry = new Telemetry(() => sizes());
      storage = await createStorage(config, { env, budget, space, metrics: telemetry.store, whyNothingEvictable: () => whyNothingEvictable(), upstream, log });
      const { cas, ac, assets, local: base, upstream: upstreamStorage } = storage;
      if (upstreamStorage) telemetry.watchUpstream(upstreamStorage);
      const storeUsage = storage;
      sizes = () => storeUsage.usage();
      telemetry.store.budgetBytes = () => budget.maxBytes;
      const instances = new InstancePolicy(config.instances);
      const uploads = new UploadRegistry();

      // Access control, per-client limits and idle calls: one interceptor in front of every service.
      const tokens = config.auth.tokenFile ? TokenFile.open(config.auth.tokenFile, log) : undefined;
      const localUsers = LocalUsers.resolve(config.auth.localUsers, config.source ?? 'the config file');
      const policy = new AccessPolicy(tokens, new Set(config.auth.anonymous), localUsers);
      // The action history: hooks in the ActionCache and Execution services, written in the background.
      const history = config.history.enabled
        ? new DaemonHistory({ env, cas, ac, config: config.history, log, identify: tokens ? (md) => tokens.lookup(bearerToken(md) ?? '')?.name : undefined })
        : undefined;
      const owners = new SocketOwners();
      const guard = new CallGuard({ policy, owners, maxCallsPerClient: config.limits.maxCallsPerClient, idleTimeoutMs: config.limits.idleTimeoutSeconds * 1000, log });
      const { limits } = config;
      connections = new ConnectionGuard(
        {
          maxConnections: limits.maxConnections === 'auto' ? autoMaxConnections() : limits.maxConnections,
          maxConnectionsPerClient: limits.maxConnectionsPerClient,
          handshakeTimeoutMs: limits.handshakeTimeoutSeconds * 1000,
          idleTimeoutMs: limits.connectionIdleTimeoutSeconds * 1000,
        },
        log,
      );
      const connectionGuard = connections;
      telemetry.watchConnections(() => connectionGuard.stats());
      // Without tokens, who owns the other end of each TCP connection decides: looked up once per connection.
      const onConnection = tokens ? undefined : (session: Http2Session): void => owners.track(session.socket, (forget) => session.once('close', forget));
      server = createGrpcServer(
        { ...config.grpc, keepaliveTimeMs: limits.keepaliveTimeSeconds * 1000, keepaliveTimeoutMs: limits.keepaliveTimeoutSeconds * 1000, connections },
        [telemetry.rpc.interceptor, guard.interceptor],
        onConnection,
      );
      // The storage services, for the daemon's listeners and for actions' REAPI sockets; only
      // the callers' rights (what Capabilities advertises) differ.
      const storageServices = (callerRights: (ctx: CallContext) => ReadonlySet<string>): Array<[grpc.ServiceDefinition, grpc.UntypedServiceImplementation]> => [
        [
          capabilitiesDefinition,
          capabilitiesService(log, {
            instances,
            maxBatchBytes: config.storage.maxBatchBytes,
            acUpdateEnabled: true,
            callerRights,
            execution: { enabled: config.execution.enabled, priorities: { min: -1000, max: 1000 } },
          }),
        ],
        [
          casDefinition,
          casService(log, cas, {
            instances,
            maxBatchBytes: config.storage.maxBatchBytes,
            maxTreeDepth: config.limits.maxTreeDepth,
            maxTreeDirectories: config.limits.maxTreeEntries,
            compression: telemetry.compression,
          }),
        ],
        [byteStreamDefinition, byteStreamService(log, cas, uploads, { instances, compression: telemetry.compression })],
        [actionCacheDefinition, actionCacheService(log, ac, cas, { instances, updateEnabled: true, onLookup: history?.recorder.onLookup })],
      ];
      for (const [definition, impl] of storageServices((ctx) => policy.rightsFor(ctx.metadata))) server.addService(definition, impl);
      const assetImpl = assetServices(log, assets, { instances });
      server.addService(fetchDefinition, assetImpl.fetch);
      server.addService(pushDefinition, assetImpl.push);

      let execution: ExecutionEngine | undefined;
      if (config.execution.enabled) {
        const treeLimits = { maxDepth: config.limits.maxTreeDepth, maxEntries: config.limits.maxTreeEntries };
        // An action's REAPI socket: the storage services and Execution, with its submitter's
        // rights as the only caller; what it executes is the action's nested work.
        const nestedApi = (scheduler: Scheduler, job: JobOptions, runAs?: { uid: number; gid: number }): NestedApiServers =>
          new NestedApiServers({
            grpc: config.grpc,
            runAs,
            log,
            interceptors: (origin) => {
              const caller = { name: `the action of execution ${origin.parent}`, rights: new Set(origin.rights as Right[]) };
              const nestedGuard = new CallGuard({
                policy: { identify: () => caller, refusal: (c, need, path) => policy.refusal(c, need, path) },
                maxCallsPerClient: config.limits.maxCallsPerClient,
                idleTimeoutMs: config.limits.idleTimeoutSeconds * 1000,
                log,
              });
              return [telemetry.rpc.interceptor, nestedGuard.interceptor];
            },
            register: (nested, origin) => {
              for (const [definition, impl] of storageServices(() => new Set(origin.rights))) nested.addService(definition, impl);
              nested.addService(executionDefinition, executionServices(log, scheduler, cas, ac, { instances, job, nested: origin, onOperation: history?.recorder.onOperation }).execution);
            },
          });
        // Actions forwarded to the upstream (upstream.execute), through its one connection.
        const forwarding = upstream && storage.upstream && config.upstream && config.upstream.execute !== 'local' ? { target: upstream, cas: storage.upstream.cas, localCas: storage.localCas, forward: config.upstream.execute, maxInFlight: config.upstream.maxInFlight } : undefined;
        execution = await ExecutionEngine.start({ config: config.execution, dataDir: config.dataDir, env, cas, casBase: base, ac, log, secrets: daemonSecrets(config), treeLimits, nestedApi, upstream: forwarding });
        const impl = executionServices(log, execution.scheduler, cas, ac, { instances, job: execution.jobOptions, callerRights: (ctx) => [...policy.rightsFor(ctx.metadata)], onOperation: history?.recorder.onOperation });
        history?.attachExecution(execution.scheduler, execution.inUse, { hide: [...config.execution.hostTools.hide], hideFiles: [config.dataDir, ...daemonSecrets(config)], hostToolsRoot: config.execution.hostTools.root });
        server.addService(executionDefinition, impl.execution);
        server.addService(operationsDefinition, impl.operations);
        server.addService(botsDefinition, botsService(log, execution.bots));
      }
      engineForCleanup = execution;
      if (execution) {
        const { workers, upstream: forwarded } = execution;
        // Local slots and actions in flight upstream, by slot: what runs now, per pool.
        const running = forwarded ? { get running() { return new Map([...workers.running, ...forwarded.running]); } } : workers;
        telemetry.watchExecution(execution.scheduler, running, execution.bots);
      }
      const gc = new StorageGc({
        store: base,
        budget,
        cacheDir: join(config.dataDir, 'cache'),
        inUse: execution?.inUse,
        log,
        onRun: (run) => telemetry.gc.recordRun(run),
        space,
      });
      whyNothingEvictable = () => gc.whyNothingEvictable();

      const startedAt = new Date();
      const addresses: string[] = [];
      let metricsServer: MetricsServer | undefined;
      let metricsError: string | undefined;
      server.addService(
        adminDefinition,
        adminService(log, {
          status: async () =>
            collectStatus({
              version: VERSION,
              startedAt,
              listeners: addresses,
              dataDir: config.dataDir,
              metrics: () => ({ url: metricsServer?.url ?? null, ...(metricsError ? { error: metricsError } : {}) }),
              execution: execution ? { scheduler: execution.scheduler, running: execution.workers.running, bots: execution.bots, upstream: execution.upstream } : undefined,
              telemetry,
              usage: () => storeUsage.usage(),
              budgetBytes: () => budget.maxBytes,
              connections: () => connectionGuard.stats(),
              disk: () => space.snapshot(),
              ...(upstreamStorage ? { upstream: () => collectUpstreamStatus(upstreamStorage) } : {}),
            }),
          collectGarbage: (req, progress) => gc.collect(req, progress),
        }),
      );

      if (config.storage.maxBatchBytes > CLIENT_RECEIVE_LIMIT - BATCH_FRAMING_ROOM) {
        log.warn(
          `storage.max-batch-bytes is ${config.storage.maxBatchBytes}: a full batch with its framing no longer fits in the 4 MiB that gRPC clients receive by default; set it to ${CLIENT_RECEIVE_LIMIT - BATCH_FRAMING_ROOM} (4032KiB) or less unless every client raised its limit`,
        );
      }
      server.addService(historyDefinition, historyService(log, history?.actions));

      const health = new HealthImplementation({ '': 'SERVING', ...Object.fromEntries(SERVICE_NAMES.map((s) => [s, 'SERVING' as const])) });
      health.addToServer(server);
      new ReflectionService(protoLoader.loadSync(REFLECTED_PROTOS, { includeDirs: [PROTO_DIR] })).addToServer(server);

      // Unix sockets: the file's permissions admit the local users TCP admits (a token file decides what they may do).
      const socketAccess = { any: localUsers.any, uids: localUsers.extraUids };
      for (const address of config.listen) addresses.push(await bindAddress(server, address, tlsFor(config, address), socketAccess));
      for (const warning of exposureWarnings(config)) log.warn(warning);
      if (config.metrics.listen) {
        // Metrics are an aid, not the service: a taken port is worth a warning, not a refusal to start.
        try {
          metricsServer = await MetricsServer.listen(config.metrics.listen, telemetry.registry);
          log.info(`Prometheus metrics at ${metricsServer.url}`);
        } catch (err) {
          metricsError = `cannot listen on ${config.metrics.listen}: ${(err as Error).message}`;
          log.warn(`no Prometheus metrics: ${metricsError} (set metrics.listen in the config to another HOST:PORT, or off)`);
        }
      }
      const daemon = new Daemon(config, addresses, server, env, lock, uploads, health, cas, base, log, engineForCleanup, telemetry, storage, metricsServer, gc, connectionGuard, history, upstream);
      history?.start();
      gc.start();
      log.info(
        `CAS budget ${formatBytes(budget.maxBytes)}: holds ${formatBytes(gc.footprint())} in ${base.usage().count} blobs; eviction from ${formatBytes(budget.highBytes)} down to ${formatBytes(budget.lowBytes)}, uploads refused past ${formatBytes(budget.hardLimitBytes)}`,
      );
      log.info(`reexec ${VERSION} serving on ${addresses.join(', ')}`, { addresses, dataDir: config.dataDir });
      return daemon;
    } catch (err) {
      await engineForCleanup?.stop().catch(() => undefined);
      connections?.stop();
      server?.forceShutdown();
      await storage?.close();
      await env?.close().catch(() => undefined);
      upstream?.close();
      lock.release();
      throw err;
    }
  }

  get running(): boolean {
    return this.state === 'running';
  }

  /** Stop accepting calls, let running ones finish (up to graceMs), then close the store. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.state !== 'running') return;
    this.state = 'stopping';
    await pausePoint('daemon-stop', this.log);
    this.log.info('shutting down: draining calls');
    for (const s of ['', ...SERVICE_NAMES]) this.health.setStatus(s, 'NOT_SERVING');
    // Running actions are stopped, not finished: their operations run again after a restart.
    await this.execution?.stop();
    // A collection in progress stops after its current batch: the store stays consistent.
    await this.gc.stop();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.log.warn(`calls still running after ${graceMs} ms: cancelling them`);
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.connections.stop();
    await this.metricsServer?.close();
    // After the workers and calls: the last completions are in the history's buffer.
    await this.history?.stop();
    await this.uploads.close();
    await this.storage.close();
    this.upstream?.close();
    await this.env.close();
    this.lock.release();
    this.state = 'stopped';
    this.log.info('stopped');
  }
}
