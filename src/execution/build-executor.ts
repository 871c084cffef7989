import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { lstat, readFile, rm, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { ActionCache } from '../ac/action-cache.js';
import type { BlobStore } from '../cas/blob-store.js';
import { Digest } from '../digest/digest.js';
import type { re } from '../proto.js';
import type { HostToolsView } from '../runner/host-tools-view.js';
import type { Runner, RunResult, SandboxPolicy, SandboxRoot } from '../runner/runner.js';
import type { Execution, ExecutionPhase, Job } from '../scheduler/operation.js';
import { REMOTE_APIS_SOCKET_PROPERTY, type PlatformRequirements } from '../scheduler/platform.js';
import type { Logger } from '../util/logger.js';
import { toRpcStatus } from '../util/rpc-status.js';
import { asStatusError, Code, failedPrecondition, StatusError } from '../util/status-error.js';
import { fetchInputTree } from '../worker/input-tree.js';
import type { InputStager, StagedInput } from '../worker/input-stager.js';
import { OutputCollector } from '../worker/output-collector.js';
import type { NestedApiProvider, NestedApiSocket } from '../worker/nested-api.js';
import { resolveInRoot, type RootView } from '../worker/root-path.js';
import { pausePoint } from '../util/test-hooks.js';
import { prepareSandboxRoot } from '../worker/sandbox-root.js';
import { timestampOf } from '../util/proto-time.js';

/**
 * Runs one leased execution to its ExecuteResponse. Action failures go into the response;
 * only a bug throws. `signal` stops it (cancel, shutdown, lease lost).
 */
export interface Executor {
  execute(execution: Execution, workerName: string, signal: AbortSignal, onPhase?: (phase: ExecutionPhase) => void): Promise<re.IExecuteResponse>;
}

/** A staged input root as the runner is told (plain data). */
export function sandboxRootOf(staged: StagedInput): SandboxRoot {
  return { dir: staged.rootDir, readOnly: staged.rootReadOnly, mounts: staged.mounts, tmpWritable: staged.tmpWritable };
}

/** How an action's platform is sandboxed, as the runner is told. */
export function sandboxPolicy(platform: PlatformRequirements): SandboxPolicy {
  return { kind: platform.sandbox, uid: platform.uid, gid: platform.gid, network: platform.network, isas: platform.isas };
}

/**
 * Store a response's result in the action cache when REAPI says it may be: the action ran,
 * exited 0, and is cacheable. Local slots and bots both finish through this.
 */
export async function cacheSuccessful(ac: ActionCache, job: Job, response: re.IExecuteResponse): Promise<void> {
  if ((response.status?.code ?? 0) !== Code.OK || !response.result || (response.result.exitCode ?? 0) !== 0 || job.doNotCache) return;
  await ac.put(job.instance, job.actionDigest, response.result);
}

/** The action-cache write around an executor: successes are cached (failures still come back with outputs and logs). */
export class CachingExecutor implements Executor {
  constructor(
    private readonly inner: Executor,
    private readonly ac: ActionCache,
    private readonly log: Logger,
  ) {}

  async execute(execution: Execution, workerName: string, signal: AbortSignal, onPhase?: (phase: ExecutionPhase) => void): Promise<re.IExecuteResponse> {
    const response = await this.inner.execute(execution, workerName, signal, onPhase);
    try {
      await cacheSuccessful(this.ac, execution.job, response);
      return response;
    } catch (err) {
      const se = asStatusError(err);
      this.log.warn(`could not cache the result of execution ${execution.id}: ${se.message}`);
      return { status: toRpcStatus(se), message: se.message };
    }
  }
}

export interface BuildContext {
  cas: BlobStore;
  stager: InputStager;
  runner: Runner;
  workDir: string;
  /** What host-tools actions see of the host (private files hidden). */
  hostTools: HostToolsView;
  /** The user actions run as, when the daemon (root) switches to one; else the daemon's own. */
  runAs?: { uid: number; gid: number };
  /** Serves the REAPI sockets of actions that ask for one (remoteApisSocketPath). */
  nestedApi?: NestedApiProvider;
  log: Logger;
}

const ts = timestampOf;

/** Logs up to this size are read on the daemon's thread (no thread-pool hops: see FsOps). */
const SMALL_LOG_BYTES = 256 * 1024;

/** An action's stdout or stderr file. */
async function readLog(path: string): Promise<Buffer> {
  return statSync(path).size <= SMALL_LOG_BYTES ? readFileSync(path) : readFile(path);
}

/**
 * Make the place where the REAPI socket is bound in: its parent directories (resolving
 * symlinks inside the root, as for outputs) and an empty file as the mount point. Returns the
 * resolved sandbox-relative path, and whether the file was made here (and must go again).
 */
async function socketMountPointFor(view: RootView, rel: string, created: (hostPath: string) => Promise<void>): Promise<{ path: string; created: boolean }> {
  const refuse = (why: string): StatusError => failedPrecondition(`platform property ${REMOTE_APIS_SOCKET_PROPERTY}: cannot put the REAPI socket at "/${rel}": ${why}`);
  const slash = rel.lastIndexOf('/');
  const parent = slash >= 0 ? await resolveInRoot(view, rel.slice(0, slash), { followLast: true, create: true, created }) : '';
  if (parent === undefined) throw refuse('its directory is outside the input root, or read-only, or not a directory');
  const path = parent ? `${parent}/${rel.slice(slash + 1)}` : rel;
  try {
    const st = await lstat(view.hostPath(path));
    if (!st.isFile()) throw refuse(`the input root has a ${st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'special file'} there`);
    return { path, created: false };
  } catch (err) {
    if (err instanceof StatusError) throw err;
  }
  if (view.readOnly?.(path)) throw refuse('its directory is a read-only part of the input root');
  try {
    await writeFile(view.hostPath(path), '', { flag: 'wx' });
  } catch (err) {
    throw refuse((err as Error).message);
  }
  return { path, created: true };
}

/**
 * Runs one action end to end on this host: fetch and stage its inputs, run it through the
 * Runner, store its outputs and logs. The action cache is CachingExecutor's business.
 */
export class BuildExecutor implements Executor {
  /**
   * Build directories still being removed, by worker: removal runs after the response is
   * reported (it is off the action's critical path), and a worker's next action waits for the
   * previous one's, so at most one per worker is left at any time.
   */
  private readonly cleaning = new Map<string, Promise<void>>();

  constructor(private readonly ctx: BuildContext) {}

  async execute(execution: Execution, workerName: string, signal: AbortSignal, onPhase: (phase: ExecutionPhase) => void = () => undefined): Promise<re.IExecuteResponse> {
    await this.cleaning.get(workerName);
    return executeAction(this.ctx, execution, workerName, signal, onPhase, (cleanup) => {
      const done = cleanup.finally(() => {
        if (this.cleaning.get(workerName) === done) this.cleaning.delete(workerName);
      });
      this.cleaning.set(workerName, done);
    });
  }

  /** Wait until every build directory is gone (at shutdown). */
  async drain(): Promise<void> {
    await Promise.all(this.cleaning.values());
  }
}

async function executeAction(
  ctx: BuildContext,
  execution: Execution,
  workerName: string,
  signal: AbortSignal,
  onPhase: (phase: ExecutionPhase) => void,
  /** Gets the removal of the build directory, which runs on after the response. */
  cleanup: (removal: Promise<void>) => void,
): Promise<re.IExecuteResponse> {
  const job = execution.job;
  const meta: re.IExecutedActionMetadata = { worker: workerName, queuedTimestamp: ts(execution.queuedAt), workerStartTimestamp: ts(new Date()) };
  const dir = join(ctx.workDir, execution.id.replace(/[^A-Za-z0-9-]/g, '_'));
  const fn = job.actionDigest.fn;
  let socket: NestedApiSocket | undefined;
  try {
    onPhase('staging');
    meta.inputFetchStartTimestamp = ts(new Date());
    const tree = job.inputTree ?? (await fetchInputTree(ctx.cas, Digest.fromProto(job.action.inputRootDigest, fn, 'input_root_digest')));
    const rootDir = join(dir, 'root');
    mkdirSync(dir, { recursive: true });
    const { staged, mountPoint, view, ignore, outputs } = await prepareSandboxRoot(ctx.stager, tree, rootDir, job.command, job.platform);
    const binds: Array<{ source: string; dest: string }> = [];
    let socketMountPoint: string | undefined;
    if (job.platform.remoteApisSocket) {
      if (!ctx.nestedApi) throw failedPrecondition(`platform property ${REMOTE_APIS_SOCKET_PROPERTY} cannot be served: this server runs actions without REAPI sockets`);
      const rel = await socketMountPointFor(view, job.platform.remoteApisSocket, (p) => ctx.stager.own(p));
      if (rel.created) {
        socketMountPoint = rel.path;
        ignore.add(rel.path);
      }
      socket = await ctx.nestedApi.open(execution);
      binds.push({ source: socket.hostPath, dest: posix.join(mountPoint, rel.path) });
    }
    meta.inputFetchCompletedTimestamp = ts(new Date());
    await pausePoint('staged');

    const stdoutPath = join(dir, 'stdout');
    const stderrPath = join(dir, 'stderr');
    onPhase('running');
    const run: RunResult = await ctx.runner.run({
      root: sandboxRootOf(staged),
      argv: job.command.arguments ?? [],
      env: (job.command.environmentVariables ?? []).map((e) => [e.name ?? '', e.value ?? '']),
      workingDirectory: job.command.workingDirectory ?? '',
      policy: sandboxPolicy(job.platform),
      stdoutPath,
      stderrPath,
      timeoutMs: job.timeoutMs,
      signal,
      hostMounts: job.platform.sandbox === 'host-tools' ? await ctx.hostTools.mounts() : undefined,
      hostToolsRoot: ctx.hostTools.root,
      binds,
      runAs: ctx.runAs,
    });
    // The socket goes with the action: nothing reaches the server through it any more.
    await socket?.close();
    socket = undefined;
    if (socketMountPoint !== undefined) await rm(view.hostPath(socketMountPoint), { force: true });
    meta.executionStartTimestamp = ts(run.startedAt);
    meta.executionCompletedTimestamp = ts(run.completedAt);
    if (run.setupError) {
      return { status: { code: Code.INTERNAL, message: run.setupError }, message: run.setupError };
    }

    onPhase('uploading');
    meta.outputUploadStartTimestamp = ts(new Date());
    const stdout = await readLog(stdoutPath);
    const stderr = await readLog(stderrPath);
    const stdoutDigest = Digest.compute(stdout, fn);
    const stderrDigest = Digest.compute(stderr, fn);
    await Promise.all([ctx.cas.put(stdoutDigest, stdout), ctx.cas.put(stderrDigest, stderr)]);
    const collector = new OutputCollector(ctx.cas, staged, tree, { fn, nodeProperties: job.command.outputNodeProperties ?? [], ignore, mountPoint });
    const collected = await collector.collect(outputs);
    meta.outputUploadCompletedTimestamp = ts(new Date());
    meta.workerCompletedTimestamp = ts(new Date());

    const result: re.IActionResult = {
      exitCode: run.exitCode,
      outputFiles: collected.outputFiles,
      outputDirectories: collected.outputDirectories,
      outputSymlinks: collected.outputSymlinks,
      stdoutDigest: stdoutDigest.toProto(),
      stderrDigest: stderrDigest.toProto(),
      executionMetadata: meta,
    };
    // Pre-2.1 clients (legacy output_files/output_directories) read symlinks from the old fields.
    if ((job.command.outputPaths ?? []).length === 0) {
      const files = new Set(job.command.outputFiles ?? []);
      result.outputFileSymlinks = collected.outputSymlinks.filter((s) => files.has(s.path ?? ''));
      result.outputDirectorySymlinks = collected.outputSymlinks.filter((s) => !files.has(s.path ?? ''));
    }
    if (run.timedOut) {
      return { result, status: { code: Code.DEADLINE_EXCEEDED, message: `the action ran longer than its timeout of ${Math.round(job.timeoutMs / 1000)} s and was killed` } };
    }
    if (run.cancelled) return { result, status: { code: Code.CANCELLED, message: 'the operation was cancelled while running' } };
    if (collected.wrongTypes.length > 0) {
      // REAPI (ActionResult.output_files, output_directories): FAILED_PRECONDITION. The logs
      // and the outputs that were right still come back; nothing is cached.
      const message = `the action's outputs do not have the types the Command declares: ${collected.wrongTypes.join('; ')}`;
      return { result, status: { code: Code.FAILED_PRECONDITION, message }, message };
    }
    return { result, status: { code: Code.OK, message: '' }, cachedResult: false };
  } catch (err) {
    const se = asStatusError(err);
    if (se.code === Code.INTERNAL) ctx.log.error('action failed on the server', { execution: execution.id, operations: execution.operationNames, error: se.message, stack: (err as Error).stack });
    return { status: toRpcStatus(se), message: se.message };
  } finally {
    await socket?.close().catch((e: Error) => ctx.log.warn(`could not close the REAPI socket of execution ${execution.id}: ${e.message}`));
    cleanup(rm(dir, { recursive: true, force: true }).catch((e: Error) => ctx.log.warn(`could not clean ${dir}: ${e.message}`)));
  }
}
