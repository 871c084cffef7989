import { chmod, rm, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ActionCache } from '../ac/action-cache.js';
import type { BlobStore } from '../cas/blob-store.js';
import type { LocalBlobStore } from '../cas/local-blob-store.js';
import type { ExecutionConfig } from '../config/config.js';
import { Execution, Operation, type Job } from '../scheduler/operation.js';
import { LmdbOperationJournal, type JournalEntry } from '../scheduler/operation-journal.js';
import { hostIsa, parsePlatform } from '../scheduler/platform.js';
import { BOTS_POOL, Scheduler, UPSTREAM_POOL, type ForwardMode } from '../scheduler/scheduler.js';
import { ExecutionForwarder, UpstreamWorkers, type UpstreamTarget } from '../upstream/execution-forwarder.js';
import type { UpstreamCas } from '../upstream/upstream-cas.js';
import { BotSessions } from '../bots/bot-sessions.js';
import { homedir } from 'node:os';
import { BubblewrapRunner, findBubblewrap } from '../runner/bubblewrap-runner.js';
import { HostToolsView } from '../runner/host-tools-view.js';
import { checkRunAs, CREATE_RUN_AS_USER, FALLBACK_RUN_AS, resolveRunAs, RUN_AS_USER } from '../host/run-as.js';
import { openStagingTo } from '../worker/staging-dirs.js';
import { BuildExecutor, CachingExecutor, type Executor } from './build-executor.js';
import type { LmdbEnv } from '../store/lmdb-env.js';
import type { Logger } from '../util/logger.js';
import { errorToRpcStatus } from '../util/rpc-status.js';
import { Code } from '../util/status-error.js';
import { InputStager } from '../worker/input-stager.js';
import type { TreeLimits } from '../worker/input-tree.js';
import type { NestedApiProvider } from '../worker/nested-api.js';
import { WorkerPool } from '../worker/worker-pool.js';
import { checkHostToolsRoot } from './host-tools-root.js';
import { detectIsaSupport, resolvePools, whyUnavailable, type IsaSupport } from './isa-support.js';
import { buildJob, type JobOptions } from './job-builder.js';
import { holdInputsOfQueuedActions, InUseDigests } from '../gc/in-use-digests.js';

/** How many times an action interrupted by a daemon restart is run again. */
const MAX_ATTEMPTS = 3;

/**
 * Remote execution wired together: scheduler with its journal, the input stager and the worker
 * slots. Created by the daemon when execution is enabled.
 */
export class ExecutionEngine {
  private constructor(
    readonly support: IsaSupport[],
    readonly scheduler: Scheduler,
    readonly workers: WorkerPool,
    /** Bot sessions of the Remote Workers API (buildbox-worker). */
    readonly bots: BotSessions,
    readonly jobOptions: JobOptions,
    /** Inputs of queued and running actions: the garbage collector leaves them alone. */
    readonly inUse: InUseDigests,
    /** Serves actions' REAPI sockets (remoteApisSocketPath). */
    readonly nestedApi: NestedApiProvider | undefined,
    private readonly build: BuildExecutor,
    /** Forwards actions to the upstream (upstream.execute is not `local`). */
    readonly upstream?: UpstreamWorkers,
  ) {}

  static async start(opts: {
    config: ExecutionConfig;
    dataDir: string;
    env: LmdbEnv;
    cas: BlobStore;
    casBase: Pick<LocalBlobStore, 'localFile'>;
    ac: ActionCache;
    log: Logger;
    /** The daemon's unix sockets, token file and TLS keys: hidden from actions like the data dir. */
    secrets?: string[];
    /** Largest input root accepted (depth, entries as staged). */
    treeLimits?: TreeLimits;
    /**
     * Serves actions' REAPI sockets (remoteApisSocketPath); made once the scheduler exists, told
     * the user actions run as (undefined: the daemon's own).
     */
    nestedApi?: (scheduler: Scheduler, jobOptions: JobOptions, runAs?: { uid: number; gid: number }) => NestedApiProvider;
    /** The upstream, which actions go to (which ones: `forward`), at most `maxInFlight` at once. */
    upstream?: { target: UpstreamTarget; cas: UpstreamCas; localCas: BlobStore; forward: ForwardMode; maxInFlight: number };
  }): Promise<ExecutionEngine> {
    const { config, dataDir, log } = opts;
    await checkHostToolsRoot(config.hostTools.root);
    const workDir = join(dataDir, 'work');
    const cacheDir = join(dataDir, 'cache');
    // Build directories of a previous run are garbage: their operations are re-run from the journal.
    await rm(workDir, { recursive: true, force: true });
    // Private even in a data dir others may read: build directories hold uploaded files.
    await mkdir(workDir, { recursive: true, mode: 0o700 });
    await chmod(workDir, 0o700);
    const bwrap = findBubblewrap();
    // Never root inside: a daemon run as root runs every action as an unprivileged user.
    const runAs = resolveRunAs(config.runAs);
    if (runAs.note) log.warn(runAs.note);
    if (runAs.user) {
      // Directories made for actions must stay reachable by that user whatever root's umask.
      process.umask(process.umask(0o022) & 0o022);
      await openStagingTo(dataDir, workDir, cacheDir, runAs.user.gid);
      const problem = bwrap ? checkRunAs(runAs.user, bwrap, [workDir, cacheDir], config.hostTools.root) : undefined;
      if (problem) throw problem;
    }
    log.info(`actions run as ${runAs.description}`);
    if (runAs.fallback) log.warn(`there is no ${RUN_AS_USER} user: actions run as ${FALLBACK_RUN_AS}, an identity other services may share; create it with \`reexec init --system\` (${CREATE_RUN_AS_USER})`);
    const support = await detectIsaSupport({ bubblewrapOk: Boolean(bwrap) });
    const pools = resolvePools(config.pools, support);
    for (const s of support.filter((x) => !x.ok)) log.info(`ISA ${s.isa} not offered: ${s.detail}${s.fix ? ` (fix: ${s.fix})` : ''}`);
    for (const p of pools) {
      if (p.unavailable) log.warn(`worker pool "${p.name}" (${p.isas.join(', ')}) is unavailable: ${p.unavailable}`);
      else log.info(`worker pool "${p.name}": ${p.slots} slot(s) for ${p.isas.join(', ')}`);
    }
    const journal = new LmdbOperationJournal(opts.env);
    const scheduler = new Scheduler(pools, {
      journal,
      retentionMs: config.operationRetentionSeconds * 1000,
      isaHint: (isa) => whyUnavailable(support, isa),
      maxAttempts: config.bots.maxAttempts,
      remoteGraceMs: config.bots.propertyGraceSeconds * 1000,
      forward: opts.upstream?.forward ?? 'local',
    });
    const forwarding = scheduler.forward !== 'local';
    if (pools.length === 0) log.info('no local worker pools (execution.pools is empty): actions run on bots only (Remote Workers API)');
    const jobOptions: JobOptions = {
      defaultTimeoutMs: config.defaultTimeoutSeconds * 1000,
      maxTimeoutMs: config.maxTimeoutSeconds * 1000,
      hostIsa: hostIsa(),
      treeLimits: opts.treeLimits,
      // Properties reexec's sandbox does not know are the upstream's to honour or refuse, when actions may go there.
      offeredElsewhere: (name, value) => forwarding || scheduler.offeredByRemote(name, value),
    };
    const bots = new BotSessions(scheduler, opts.ac, log, { sessionTimeoutMs: config.bots.sessionTimeoutSeconds * 1000, maxPollMs: config.bots.pollSeconds * 1000 });
    const owner = runAs.user ? { uid: runAs.user.uid, gid: runAs.user.gid } : undefined;
    const stager = new InputStager(opts.cas, opts.casBase, cacheDir, owner);
    const nestedApi = opts.nestedApi?.(scheduler, jobOptions, owner);
    const { root, hide, expose } = config.hostTools;
    // Hidden whatever expose says: the data dir, the daemon's sockets, token file and TLS keys, and the actions' REAPI sockets.
    const secrets = (): string[] => [dataDir, ...(opts.secrets ?? []), ...(nestedApi?.socketDir ? [nestedApi.socketDir] : [])];
    const hostTools = new HostToolsView({ root, hide, expose, secrets, home: homedir() }, owner);
    const build = new BuildExecutor({ cas: opts.cas, stager, runner: new BubblewrapRunner(), workDir, hostTools, runAs: owner, nestedApi, log });
    const executor: Executor = new CachingExecutor(build, opts.ac, log);
    const workers = new WorkerPool(scheduler, executor, log);
    if (root !== '/') log.info(`host-tools actions see ${root} as their root file system (read-only)`);
    const inUse = new InUseDigests();
    holdInputsOfQueuedActions(scheduler, inUse);
    await ExecutionEngine.restore(scheduler, journal, opts.cas, jobOptions, log);
    workers.start(pools);
    let upstream: UpstreamWorkers | undefined;
    if (opts.upstream && forwarding) {
      const { target, maxInFlight } = opts.upstream;
      const forwarder = new ExecutionForwarder(target, opts.upstream.cas, { cas: opts.cas, local: opts.upstream.localCas }, opts.ac, log);
      upstream = new UpstreamWorkers(scheduler, forwarder, log);
      upstream.start(maxInFlight);
      log.info(`actions forwarded to upstream ${target.url}: ${scheduler.forward === 'upstream' ? 'every one' : 'those no local pool or bot can run'} (at most ${maxInFlight} at once)`);
    }
    return new ExecutionEngine(support, scheduler, workers, bots, jobOptions, inUse, nestedApi, build, upstream);
  }

  /**
   * Operations of a previous run: finished ones stay queryable, unfinished ones run again,
   * those that shared an execution sharing it again.
   */
  private static async restore(scheduler: Scheduler, journal: LmdbOperationJournal, cas: BlobStore, jobOptions: JobOptions, log: Logger): Promise<void> {
    const stubJob = (e: JournalEntry): Job => ({ instance: e.instance, actionDigest: e.actionDigest, action: {}, command: {}, platform: parsePlatform(undefined), priority: e.priority, doNotCache: true, timeoutMs: 0 });
    const unfinished = new Map<string, JournalEntry[]>();
    for (const e of journal.load()) {
      if (e.stage !== 'COMPLETED') {
        unfinished.set(e.execution, [...(unfinished.get(e.execution) ?? []), e]);
        continue;
      }
      const ex = new Execution(e.execution, stubJob(e), e.pool, e.queuedAt);
      ex.stage = 'COMPLETED';
      ex.completedAt = e.completedAt;
      ex.response = e.response;
      scheduler.restoreCompleted(new Operation(e.name, ex, e.queuedAt, e.submitter));
    }
    let requeued = 0;
    for (const [id, entries] of unfinished) {
      const first = entries.reduce((a, b) => (b.queuedAt < a.queuedAt ? b : a));
      const priority = Math.min(...entries.map((e) => e.priority));
      const ex = new Execution(id, stubJob(first), first.pool, first.queuedAt, first.submitter.rights);
      ex.attempts = Math.max(...entries.map((e) => e.attempts));
      const ops = entries.map((e) => new Operation(e.name, ex, e.queuedAt, e.submitter));
      if (ex.attempts >= MAX_ATTEMPTS) {
        scheduler.restoreExecution(ex, ops, { status: { code: Code.UNAVAILABLE, message: `the daemon stopped while this action ran, ${ex.attempts} times; not retried again` } });
        continue;
      }
      try {
        // No bot is connected yet: what only bots offered waits for them to come back.
        ex.job = await buildJob(cas, first.instance, first.actionDigest, { ...jobOptions, offeredElsewhere: () => true }, priority);
        ex.pool = scheduler.pools.find((p) => scheduler.localWorker(p).accepts(ex.job))?.name ?? (scheduler.forwarded(ex.job.platform) ? UPSTREAM_POOL : BOTS_POOL);
        scheduler.restoreExecution(ex, ops);
        requeued++;
      } catch (err) {
        scheduler.restoreExecution(ex, ops, { status: errorToRpcStatus(err) });
      }
    }
    if (requeued) log.info(`re-queued ${requeued} action(s) interrupted by the last shutdown`);
  }

  async stop(): Promise<void> {
    this.scheduler.close();
    this.bots.stop();
    await Promise.all([this.workers.close(), this.upstream?.close()]);
    await this.build.drain();
    await this.nestedApi?.close?.();
  }
}
