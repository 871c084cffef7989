import { mkdir, rm, stat, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ActionCache } from '../ac/action-cache.js';
import type { BlobStore } from '../cas/blob-store.js';
import { Digest } from '../digest/digest.js';
import type { re } from '../proto.js';
import { HOST_TOOLS_ROOT, runInBubblewrap, type RunResult } from '../runner/bubblewrap-runner.js';
import type { Execution, ExecutionPhase } from '../scheduler/operation.js';
import type { Logger } from '../util/logger.js';
import { toRpcStatus } from '../util/rpc-status.js';
import { asStatusError, Code } from '../util/status-error.js';
import { fetchInputTree } from './input-tree.js';
import type { InputStager } from './input-stager.js';
import { OutputCollector, resolveOutputPath } from './output-collector.js';
import { resolveInRoot } from './root-path.js';

export interface ExecutorContext {
  cas: BlobStore;
  ac: ActionCache;
  stager: InputStager;
  workDir: string;
  /** Host paths actions must never see (the data dir). */
  hide: string[];
  /** Host files actions must never reach (the daemon's unix sockets). */
  hideFiles?: string[];
  /** The file system host-tools actions see as "/" (read-only); default the host's. */
  hostToolsRoot?: string;
  log: Logger;
}

const ts = (d: Date): { seconds: number; nanos: number } => ({ seconds: Math.floor(d.getTime() / 1000), nanos: (d.getTime() % 1000) * 1e6 });

/** The requested outputs, normalised inside the root and echoed verbatim. */
export function requestedOutputs(command: re.ICommand): Array<{ rel: string; reported: string; kind: 'any' | 'file' | 'directory' }> {
  const wd = command.workingDirectory ?? '';
  const out: Array<{ rel: string; reported: string; kind: 'any' | 'file' | 'directory' }> = [];
  const add = (p: string, kind: 'any' | 'file' | 'directory'): void => {
    const rel = resolveOutputPath(wd, p);
    if (rel !== undefined) out.push({ rel, reported: p, kind });
  };
  if ((command.outputPaths ?? []).length > 0) for (const p of command.outputPaths!) add(p, 'any');
  else {
    for (const p of command.outputFiles ?? []) add(p, 'file');
    for (const p of command.outputDirectories ?? []) add(p, 'directory');
  }
  return out;
}

/**
 * Runs one action end to end: fetch and stage its inputs, run it in the sandbox, store its
 * outputs and logs, cache a successful result. Action failures go into the ExecuteResponse;
 * only a bug throws.
 */
export async function executeAction(
  ctx: ExecutorContext,
  execution: Execution,
  workerName: string,
  signal: AbortSignal,
  onPhase: (phase: ExecutionPhase) => void = () => undefined,
): Promise<re.IExecuteResponse> {
  const job = execution.job;
  const meta: re.IExecutedActionMetadata = { worker: workerName, queuedTimestamp: ts(execution.queuedAt), workerStartTimestamp: ts(new Date()) };
  const dir = join(ctx.workDir, execution.id.replace(/[^A-Za-z0-9-]/g, '_'));
  const fn = job.actionDigest.fn;
  try {
    onPhase('staging');
    meta.inputFetchStartTimestamp = ts(new Date());
    const tree = job.inputTree ?? (await fetchInputTree(ctx.cas, Digest.fromProto(job.action.inputRootDigest, fn, 'input_root_digest')));
    const rootDir = join(dir, 'root');
    await mkdir(dir, { recursive: true });
    const staged = await ctx.stager.stage(tree, rootDir, { honourReadOnly: job.platform.sandbox === 'rootfs' });
    // Mount points the runner needs that the input root lacks: created here, left out of outputs.
    const ignore = new Set<string>();
    if (job.platform.sandbox === 'rootfs') {
      for (const m of ['proc', 'dev', 'tmp']) {
        try {
          await stat(join(rootDir, m));
        } catch {
          await mkdir(join(rootDir, m));
          ignore.add(m);
        }
      }
    }
    const outputs = requestedOutputs(job.command);
    // The spec: directories leading up to output paths exist before the command runs. Made one
    // at a time, resolving input symlinks inside the root: `x -> /somewhere` with an output
    // `x/y/z` must not create /somewhere/y on the host. Never inside the shared read-only cache.
    const mountPoint = job.platform.sandbox === 'host-tools' ? HOST_TOOLS_ROOT : '/';
    const cached = [...staged.cachedDirs.keys()];
    const view = { hostPath: (rel: string) => join(rootDir, rel), mountPoint, readOnly: (rel: string) => cached.some((c) => rel === c || rel.startsWith(c + '/')) };
    for (const o of outputs) {
      const parent = o.rel.includes('/') ? o.rel.slice(0, o.rel.lastIndexOf('/')) : '';
      if (parent) await resolveInRoot(view, parent, { followLast: true, create: true });
    }
    meta.inputFetchCompletedTimestamp = ts(new Date());

    const stdoutPath = join(dir, 'stdout');
    const stderrPath = join(dir, 'stderr');
    onPhase('running');
    const run: RunResult = await runInBubblewrap({
      staged,
      argv: job.command.arguments ?? [],
      env: (job.command.environmentVariables ?? []).map((e) => [e.name ?? '', e.value ?? '']),
      workingDirectory: job.command.workingDirectory ?? '',
      platform: job.platform,
      stdoutPath,
      stderrPath,
      timeoutMs: job.timeoutMs,
      signal,
      hide: ctx.hide,
      hideFiles: ctx.hideFiles,
      hostToolsRoot: ctx.hostToolsRoot,
    });
    meta.executionStartTimestamp = ts(run.startedAt);
    meta.executionCompletedTimestamp = ts(run.completedAt);
    if (run.setupError) {
      return { status: { code: Code.INTERNAL, message: run.setupError }, message: run.setupError };
    }

    onPhase('uploading');
    meta.outputUploadStartTimestamp = ts(new Date());
    const stdout = await readFile(stdoutPath);
    const stderr = await readFile(stderrPath);
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
    // Only successes are cached; failures still return outputs and logs (BuildStream caches failed artifacts).
    if (run.exitCode === 0 && !job.doNotCache) await ctx.ac.put(job.instance, job.actionDigest, result);
    return { result, status: { code: Code.OK, message: '' }, cachedResult: false };
  } catch (err) {
    const se = asStatusError(err);
    if (se.code === Code.INTERNAL) ctx.log.error('action failed on the server', { execution: execution.id, operations: execution.operationNames, error: se.message, stack: (err as Error).stack });
    return { status: toRpcStatus(se), message: se.message };
  } finally {
    await rm(dir, { recursive: true, force: true }).catch((e: Error) => ctx.log.warn(`could not clean ${dir}: ${e.message}`));
  }
}
