import { setMaxListeners } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import type { ActionCache } from '../ac/action-cache.js';
import type { BlobStore } from '../cas/blob-store.js';
import { Digest } from '../digest/digest.js';
import { cacheSuccessful, type Executor } from '../execution/build-executor.js';
import { longrunning, re } from '../proto.js';
import type { Execution, ExecutionPhase } from '../scheduler/operation.js';
import type { Lease, Scheduler, Worker } from '../scheduler/scheduler.js';
import type { Logger } from '../util/logger.js';
import { toRpcStatus } from '../util/rpc-status.js';
import { asStatusError, Code, StatusError } from '../util/status-error.js';
import { fetchInputTree, type InputTree } from '../worker/input-tree.js';
import { fetchFromUpstream, sendToUpstream, upstreamError } from './blob-transfer.js';
import type { UpstreamCas } from './upstream-cas.js';
import type { UpstreamConnection } from './upstream-connection.js';

/** The upstream as execution forwarding needs it: its connection's clients, calls, capabilities and health. */
export type UpstreamTarget = Pick<UpstreamConnection, 'url' | 'instance' | 'clients' | 'usable' | 'health' | 'callTimeoutMs' | 'unary'>;

/** Why the upstream cannot be used now, for status (undefined: it can, or may). */
export function upstreamUnavailable(up: Pick<UpstreamConnection, 'usable' | 'health'>): string | undefined {
  if (up.usable) return undefined;
  const h = up.health();
  return `${h.state} since ${new Date(h.since).toISOString()}${h.lastError ? `: ${h.lastError}` : ''}`;
}

export interface ForwarderOptions {
  /** After a cancel reaches the upstream, how long to wait for its operation to end before giving up on it. */
  cancelGraceMs: number;
  /** How many times a broken Execute stream is resumed with WaitExecution. */
  maxReconnects: number;
  /**
   * While an operation runs upstream, it is also asked for with GetOperation this often: a
   * stream on a network that went silent (no reset, no answer) is noticed within one call
   * timeout after that, instead of hanging until TCP gives up.
   */
  pollMs: number;
}

const DEFAULT_OPTIONS: ForwarderOptions = { cancelGraceMs: 15_000, maxReconnects: 3, pollMs: 30_000 };

const EXECUTE_RESPONSE = 'build.bazel.remote.execution.v2.ExecuteResponse';
const OPERATION_METADATA = 'build.bazel.remote.execution.v2.ExecuteOperationMetadata';
const typeName = (url: string | null | undefined): string => (url ?? '').slice((url ?? '').lastIndexOf('/') + 1);

type Stage = re.ExecutionStage.Value;

/** What a finished upstream operation says. */
function responseOf(url: string, op: longrunning.IOperation): re.IExecuteResponse {
  if (op.error) return { status: { code: op.error.code ?? Code.UNKNOWN, message: `upstream ${url}: ${op.error.message ?? ''}` } };
  if (!op.response || typeName(op.response.type_url) !== EXECUTE_RESPONSE) {
    return { status: { code: Code.INTERNAL, message: `upstream ${url} finished operation ${op.name} without an ExecuteResponse (${op.response?.type_url ?? 'no response'})` } };
  }
  try {
    return re.ExecuteResponse.decode(op.response.value!);
  } catch (err) {
    return { status: { code: Code.INTERNAL, message: `upstream ${url} sent an ExecuteResponse that does not decode: ${(err as Error).message}` } };
  }
}

function stageOf(op: longrunning.IOperation): Stage | undefined {
  if (!op.metadata || typeName(op.metadata.type_url) !== OPERATION_METADATA) return undefined;
  try {
    return re.ExecuteOperationMetadata.decode(op.metadata.value!).stage;
  } catch {
    return undefined;
  }
}

/** Every blob an action needs upstream: the Action, its Command, and the input root's directories and files. */
function inputClosure(actionDigest: Digest, action: re.IAction, tree: InputTree): Digest[] {
  const fn = actionDigest.fn;
  const out = new Map<string, Digest>([[actionDigest.key, actionDigest]]);
  const command = Digest.fromProto(action.commandDigest, fn, 'Action.command_digest');
  out.set(command.key, command);
  const todo = [tree.root];
  const seen = new Set<string>();
  while (todo.length > 0) {
    const d = todo.pop()!;
    if (seen.has(d.key)) continue;
    seen.add(d.key);
    out.set(d.key, d);
    for (const sub of tree.directories.get(d.key)?.directories ?? []) todo.push(Digest.fromProto(sub.digest, fn));
  }
  for (const f of tree.files.values()) out.set(f.key, f);
  return [...out.values()];
}

/** What an ActionResult names directly: logs, output files, output trees and root Directories. */
function directResultBlobs(result: re.IActionResult, fn: Digest['fn']): { direct: Digest[]; trees: Digest[]; roots: Digest[] } {
  const direct: Digest[] = [];
  const trees: Digest[] = [];
  const roots: Digest[] = [];
  const add = (list: Digest[], d: re.IDigest | null | undefined, field: string): void => {
    if (d && d.hash) list.push(Digest.fromProto(d, fn, field));
  };
  add(direct, result.stdoutDigest, 'stdout_digest');
  add(direct, result.stderrDigest, 'stderr_digest');
  for (const f of result.outputFiles ?? []) add(direct, f.digest, `output_files[${f.path}]`);
  for (const d of result.outputDirectories ?? []) {
    add(trees, d.treeDigest, `output_directories[${d.path}].tree_digest`);
    add(roots, d.rootDirectoryDigest, `output_directories[${d.path}].root_directory_digest`);
  }
  return { direct: [...direct, ...trees], trees, roots };
}

/**
 * What an output Tree names: its files and (as their own blobs) its subdirectories. The
 * Directories are stored locally from the Tree itself: an upstream need not hold them as blobs.
 */
function treeBlobs(tree: re.ITree, fn: Digest['fn'], where: string): Digest[] {
  const out: Digest[] = [];
  for (const dir of [tree.root, ...(tree.children ?? [])]) {
    for (const f of dir?.files ?? []) if (f.digest?.hash) out.push(Digest.fromProto(f.digest, fn, `a file of ${where}`));
    for (const sub of dir?.directories ?? []) if (sub.digest?.hash) out.push(Digest.fromProto(sub.digest, fn, `a directory of ${where}`));
  }
  return out;
}

/**
 * Runs a leased execution on the upstream: sends the whole input closure the upstream lacks,
 * Executes the same action digest there, follows the operation (resuming a broken stream with
 * WaitExecution), passes its stage through as our execution's phase and our cancel through as
 * CancelOperation, then copies the result's blobs into the local store so local clients can
 * read them. A result the action cache may hold is cached locally like a local one.
 */
export class ExecutionForwarder implements Executor {
  private readonly opts: ForwarderOptions;

  constructor(
    private readonly target: UpstreamTarget,
    /** The upstream's CAS: where inputs go and outputs come from. */
    private readonly upstreamCas: UpstreamCas,
    /** The local stores: `cas` as clients see it (input trees are read through it), `local` the local chain alone (outputs land there). */
    private readonly stores: { cas: BlobStore; local: BlobStore },
    private readonly ac: ActionCache,
    private readonly log: Logger,
    opts: Partial<ForwarderOptions> = {},
  ) {
    this.opts = { ...DEFAULT_OPTIONS, ...opts };
  }

  get url(): string {
    return this.target.url;
  }

  /** Why actions cannot be forwarded now (the upstream is down), for status. */
  unavailable(): string | undefined {
    return upstreamUnavailable(this.target);
  }

  async execute(ex: Execution, _worker: string, signal: AbortSignal, onPhase: (phase: ExecutionPhase) => void = () => undefined): Promise<re.IExecuteResponse> {
    try {
      const response = await this.forward(ex, signal, onPhase);
      try {
        await cacheSuccessful(this.ac, ex.job, response);
      } catch (err) {
        this.log.warn(`could not cache the result of execution ${ex.id} (run on upstream ${this.url}): ${asStatusError(err).message}`);
      }
      return response;
    } catch (err) {
      if (signal.aborted) return { status: { code: Code.CANCELLED, message: `the operation was cancelled while it ran on upstream ${this.url}` } };
      const se = asStatusError(err);
      if (se.code === Code.INTERNAL) this.log.error(`forwarding execution ${ex.id} to upstream ${this.url} failed`, { error: se.message, stack: (err as Error).stack });
      else this.log.warn(`forwarding execution ${ex.id} (${ex.job.actionDigest}) to upstream ${this.url} failed: ${se.message}`);
      return { status: toRpcStatus(se), message: se.message };
    }
  }

  /**
   * Fail fast when the upstream is known to be down, or its channel does not connect within
   * the call timeout (then a probe through the connection marks it down for the next ones).
   */
  private async ready(signal: AbortSignal): Promise<void> {
    const why = upstreamUnavailable(this.target);
    if (why) throw new StatusError(Code.UNAVAILABLE, `upstream ${this.url} is unavailable (${why}); actions forwarded there fail until it is back`);
    const client = this.target.clients.execution as grpc.Client;
    const timeoutMs = this.target.callTimeoutMs;
    const connected = await new Promise<Error | undefined>((resolve) => {
      const onAbort = (): void => resolve(new StatusError(Code.CANCELLED, 'cancelled'));
      signal.addEventListener('abort', onAbort, { once: true });
      client.waitForReady(Date.now() + timeoutMs, (err) => {
        signal.removeEventListener('abort', onAbort);
        resolve(err);
      });
    });
    if (!connected) return;
    if (signal.aborted) throw connected;
    await this.target.unary('capabilities', 'GetCapabilities', { instanceName: this.target.instance }).catch(() => undefined);
    throw new StatusError(Code.UNAVAILABLE, `upstream ${this.url} is unreachable: no connection within ${Math.round(timeoutMs / 1000)} s (${connected.message})`);
  }

  private async uploadInputs(ex: Execution, signal: AbortSignal): Promise<void> {
    const job = ex.job;
    const tree = job.inputTree ?? (await fetchInputTree(this.stores.cas, Digest.fromProto(job.action.inputRootDigest, job.actionDigest.fn, 'input_root_digest')));
    const closure = inputClosure(job.actionDigest, job.action, tree);
    const bytes = await sendToUpstream(this.url, this.upstreamCas, this.stores.local, closure, signal);
    this.log.debug(`execution ${ex.id}: ${closure.length} input blob(s), ${bytes} bytes sent to upstream ${this.url}`);
  }

  private async forward(ex: Execution, signal: AbortSignal, onPhase: (phase: ExecutionPhase) => void): Promise<re.IExecuteResponse> {
    const job = ex.job;
    onPhase('forwarding');
    await this.ready(signal);
    await this.uploadInputs(ex, signal);
    let response = await this.follow(ex, signal, onPhase);
    // The upstream lost an input between our upload and its Execute (evicted): send them again, once.
    if (response.status?.code === Code.FAILED_PRECONDITION && !signal.aborted) {
      this.log.info(`upstream ${this.url} lacks inputs of execution ${ex.id}: sending them again (${response.status.message})`);
      onPhase('forwarding');
      await this.uploadInputs(ex, signal);
      response = await this.follow(ex, signal, onPhase);
    }
    if (response.result) {
      onPhase('fetching');
      await this.fetchOutputs(response.result, job.actionDigest.fn, signal);
      const meta = (response.result.executionMetadata ??= {});
      meta.worker = meta.worker ? `${this.url} (${meta.worker})` : this.url;
    }
    if (response.status?.code && response.status.message && !response.status.message.includes(this.url)) {
      response.status = { ...response.status, message: `upstream ${this.url}: ${response.status.message}` };
    }
    return response;
  }

  /** Execute upstream and follow the operation to its end, resuming with WaitExecution; our cancel becomes CancelOperation. */
  private follow(ex: Execution, signal: AbortSignal, onPhase: (phase: ExecutionPhase) => void): Promise<re.IExecuteResponse> {
    const { execution, operations } = this.target.clients as { execution: grpc.Client & Record<string, any>; operations: grpc.Client & Record<string, any> };
    const job = ex.job;
    return new Promise<re.IExecuteResponse>((resolve, reject) => {
      let name: string | undefined;
      let call: grpc.ClientReadableStream<longrunning.IOperation> | undefined;
      let settled = false;
      let reconnects = 0;
      let cancelTimer: NodeJS.Timeout | undefined;
      const poll = setInterval(() => void check(), this.opts.pollMs);
      poll.unref();
      const finish = (r: re.IExecuteResponse | Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(cancelTimer);
        clearInterval(poll);
        signal.removeEventListener('abort', onAbort);
        call?.cancel();
        if (r instanceof Error) reject(r);
        else resolve(r);
      };
      const sendCancel = (opName: string): void => {
        operations['CancelOperation']({ name: opName }, new grpc.Metadata(), { deadline: Date.now() + Math.max(this.target.callTimeoutMs, 10_000) }, (err: grpc.ServiceError | null) => {
          if (err) this.log.warn(`upstream ${this.url} did not take the cancel of ${opName}: ${err.details || err.message}`);
          else this.log.info(`cancelled operation ${opName} on upstream ${this.url} (execution ${ex.id})`);
        });
      };
      const onAbort = (): void => {
        const cancelled: re.IExecuteResponse = { status: { code: Code.CANCELLED, message: `the operation was cancelled; upstream ${this.url} was told to cancel ${name ?? 'it'}` } };
        // Not sent yet: nothing runs upstream.
        if (!name && !call) return finish(cancelled);
        // Sent but not named yet: the upstream may already run it, so the cancel goes as soon as it names it.
        if (name) sendCancel(name);
        // The upstream's operation ends CANCELLED and the stream says so; if it never does, stop waiting.
        cancelTimer = setTimeout(() => finish(cancelled), this.opts.cancelGraceMs);
        cancelTimer.unref();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      const onOperation = (op: longrunning.IOperation): void => {
        if (op.name && !name) {
          name = op.name;
          this.log.debug(`execution ${ex.id} is operation ${name} on upstream ${this.url}`);
          if (signal.aborted) sendCancel(name);
        }
        if (op.done) {
          const r = responseOf(this.url, op);
          return finish(signal.aborted && !r.result ? { ...r, status: { code: Code.CANCELLED, message: `the operation was cancelled on upstream ${this.url} (${r.status?.message ?? ''})` } } : r);
        }
        const stage = stageOf(op);
        if (stage === re.ExecutionStage.Value.QUEUED || stage === re.ExecutionStage.Value.CACHE_CHECK) onPhase('queued-upstream');
        else if (stage === re.ExecutionStage.Value.EXECUTING) onPhase('running');
      };
      // The liveness check: GetOperation through the connection (its deadline, its health).
      let checking = false;
      const check = async (): Promise<void> => {
        if (!name || settled || checking) return;
        checking = true;
        try {
          const op = await this.target.unary<longrunning.IOperation>('operations', 'GetOperation', { name });
          if (!settled && op.done) onOperation(op);
        } catch (err) {
          const code = (err as grpc.ServiceError).code;
          if (settled || (code !== Code.UNAVAILABLE && code !== Code.DEADLINE_EXCEEDED && code !== Code.NOT_FOUND)) return;
          // The stream cannot be trusted any more: drop it, then resume or fail as for a broken one.
          const stale = call;
          call = undefined;
          stale?.cancel();
          broken(err as grpc.ServiceError);
        } finally {
          checking = false;
        }
      };
      const open = (fresh: boolean): void => {
        if (settled) return;
        call = fresh
          ? execution['Execute']({
              instanceName: this.target.instance,
              actionDigest: job.actionDigest.toProto(),
              digestFunction: job.actionDigest.fn.value,
              skipCacheLookup: job.skipCacheLookup ?? false,
              executionPolicy: { priority: job.priority },
            })
          : execution['WaitExecution']({ name });
        const current = call!;
        let sawDone = false;
        current.on('data', (op: longrunning.IOperation) => {
          if (op.done) sawDone = true;
          onOperation(op);
        });
        current.on('error', (err: grpc.ServiceError) => {
          if (settled || current !== call) return;
          if (signal.aborted && err.code === Code.CANCELLED) return;
          broken(err);
        });
        current.on('end', () => {
          if (settled || current !== call || sawDone) return;
          broken(undefined);
        });
      };
      const broken = (err: grpc.ServiceError | undefined): void => {
        const what = err ? `${grpc.status[err.code] ?? err.code}: ${err.details || err.message}` : 'the stream ended before the operation was done';
        // Before the upstream named an operation there is nothing to resume: its refusal is the answer.
        if (!name) {
          if (err && err.code !== Code.UNAVAILABLE && err.code !== Code.DEADLINE_EXCEEDED && err.code !== Code.INTERNAL && err.code !== Code.UNKNOWN) {
            return finish({ status: { code: err.code, message: `upstream ${this.url} refused the action: ${err.details || err.message}` } });
          }
          return finish(upstreamError(this.url, 'Execute', err ?? new StatusError(Code.UNAVAILABLE, what)));
        }
        if (err && err.code === Code.NOT_FOUND) return finish(new StatusError(Code.UNAVAILABLE, `upstream ${this.url} no longer knows operation ${name} (${what}); run the action again`));
        if (reconnects >= this.opts.maxReconnects) return finish(new StatusError(Code.UNAVAILABLE, `upstream ${this.url}: lost operation ${name} after ${reconnects} reconnect(s): ${what}`));
        reconnects++;
        this.log.info(`the stream of operation ${name} from upstream ${this.url} broke (${what}); resuming with WaitExecution`);
        this.ready(signal).then(
          () => open(false),
          (e: Error) => finish(signal.aborted ? { status: { code: Code.CANCELLED, message: 'cancelled' } } : new StatusError(Code.UNAVAILABLE, `${e.message}; operation ${name} there is lost to us (${what})`)),
        );
      };
      open(true);
    });
  }

  /** Copy the result's blobs (logs, files, output trees and their Directories) from the upstream into the local store. */
  private async fetchOutputs(result: re.IActionResult, fn: Digest['fn'], signal: AbortSignal): Promise<void> {
    const local = this.stores.local;
    const fetch = (digests: Digest[]): Promise<number> => fetchFromUpstream(this.url, this.upstreamCas, local, digests, signal);
    const { direct, trees, roots } = directResultBlobs(result, fn);
    await fetch(direct);
    const inTrees: Digest[] = [...roots];
    for (const t of trees) {
      const bytes = await local.get(t, { signal });
      if (!bytes) throw new StatusError(Code.UNAVAILABLE, `output tree ${t} did not arrive from upstream ${this.url}`);
      const tree = re.Tree.decode(bytes);
      for (const dir of [tree.root, ...tree.children]) {
        if (!dir) continue;
        const data = re.Directory.encode(dir).finish();
        await local.put(Digest.compute(data, fn), data, { signal });
      }
      inTrees.push(...treeBlobs(tree, fn, `output tree ${t}`));
    }
    // Whatever the Tree's own encoding did not reproduce comes from the upstream.
    await fetch(inTrees);
  }
}

/**
 * The upstream as workers of the scheduler: `slots` concurrent forwarded actions, each a
 * lease run through the forwarder. Forwarded actions are counted under the pool "upstream".
 */
export class UpstreamWorkers {
  private readonly stop = new AbortController();
  private readonly loops: Promise<void>[] = [];
  /** Slot → the execution it forwards, for status and metrics. */
  readonly running = new Map<string, Execution>();

  constructor(
    private readonly scheduler: Scheduler,
    private readonly forwarder: ExecutionForwarder,
    private readonly log: Logger,
  ) {}

  get url(): string {
    return this.forwarder.url;
  }

  unavailable(): string | undefined {
    return this.forwarder.unavailable();
  }

  start(slots: number): void {
    // Every slot waits on the one stop signal.
    setMaxListeners(slots + 10, this.stop.signal);
    const worker = this.scheduler.upstreamWorker(this.forwarder.url);
    for (let i = 0; i < slots; i++) this.loops.push(this.loop(worker, `upstream-${i}`));
  }

  private async loop(worker: Worker, slot: string): Promise<void> {
    while (!this.stop.signal.aborted) {
      let lease: Lease;
      try {
        lease = await this.scheduler.lease(worker, this.stop.signal);
      } catch {
        return;
      }
      const ex = lease.execution;
      ex.worker = this.forwarder.url;
      this.running.set(slot, ex);
      try {
        const response = await this.forwarder.execute(ex, this.forwarder.url, lease.signal, (phase) => {
          if (ex.phase === phase) return;
          ex.phase = phase;
          this.scheduler.progressed(ex);
        });
        if (!this.scheduler.isClosed) this.scheduler.completeLease(lease.id, response);
      } catch (err) {
        this.log.error('upstream slot failed (a bug)', { slot, execution: ex.id, error: (err as Error).stack });
        if (!this.scheduler.isClosed) this.scheduler.completeLease(lease.id, { status: { code: Code.INTERNAL, message: `internal error forwarding the action: ${(err as Error).message}` } });
      } finally {
        this.running.delete(slot);
      }
    }
  }

  async close(): Promise<void> {
    this.stop.abort();
    await Promise.allSettled(this.loops);
  }
}
