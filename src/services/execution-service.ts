import type * as grpc from '@grpc/grpc-js';
import type { ActionCache } from '../ac/action-cache.js';
import type { BlobStore } from '../cas/blob-store.js';
import { Digest } from '../digest/digest.js';
import type { InstancePolicy } from '../digest/instance-name.js';
import { buildJob, type JobOptions } from '../execution/job-builder.js';
import { longrunning, re, TYPE_URL_PREFIX } from '../proto.js';
import type { Execution, Operation } from '../scheduler/operation.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { Logger } from '../util/logger.js';
import { Code, invalidArgument } from '../util/status-error.js';
import { inlineOutputs } from './action-cache-service.js';
import { Empty, method, serverStream, unary, type CallContext, type StreamWriter } from './grpc-adapters.js';
import { protoTimeToMs } from '../util/proto-time.js';

const EXECUTION = 'build.bazel.remote.execution.v2.Execution';
const OPERATIONS = 'google.longrunning.Operations';

export const executionDefinition = {
  Execute: method(EXECUTION, 'Execute', re.ExecuteRequest, longrunning.Operation, { response: true }),
  WaitExecution: method(EXECUTION, 'WaitExecution', re.WaitExecutionRequest, longrunning.Operation, { response: true }),
};

export const operationsDefinition = {
  ListOperations: method(OPERATIONS, 'ListOperations', longrunning.ListOperationsRequest, longrunning.ListOperationsResponse),
  GetOperation: method(OPERATIONS, 'GetOperation', longrunning.GetOperationRequest, longrunning.Operation),
  DeleteOperation: method(OPERATIONS, 'DeleteOperation', longrunning.DeleteOperationRequest, Empty),
  CancelOperation: method(OPERATIONS, 'CancelOperation', longrunning.CancelOperationRequest, Empty),
  WaitOperation: method(OPERATIONS, 'WaitOperation', longrunning.WaitOperationRequest, longrunning.Operation),
};

const STAGES: Record<Operation['stage'], number> = { QUEUED: 2, EXECUTING: 3, COMPLETED: 4 };

/** An Operation message: metadata always, response when done, and never Operation.error (BuildStream asserts on it). */
export function toOperationMessage(op: Operation, response?: re.IExecuteResponse): longrunning.IOperation {
  // An action forwarded to the upstream is queued until it runs there.
  const forwardedQueued = op.stage === 'EXECUTING' && (op.phase === 'forwarding' || op.phase === 'queued-upstream');
  const metadata = re.ExecuteOperationMetadata.encode({
    stage: forwardedQueued ? STAGES.QUEUED : STAGES[op.stage],
    actionDigest: op.job.actionDigest.toProto(),
    digestFunction: op.job.actionDigest.fn.value,
  }).finish();
  const msg: longrunning.IOperation = {
    name: op.name,
    metadata: { type_url: TYPE_URL_PREFIX + 'build.bazel.remote.execution.v2.ExecuteOperationMetadata', value: metadata },
    done: op.stage === 'COMPLETED',
  };
  const r = response ?? op.response;
  if (msg.done && r) {
    msg.response = { type_url: TYPE_URL_PREFIX + 'build.bazel.remote.execution.v2.ExecuteResponse', value: re.ExecuteResponse.encode(r).finish() };
  }
  return msg;
}

/** Updates at least this often while an action runs: load balancers cut streams idle for 60 s. */
const KEEPALIVE_MS = 20_000;

export interface ExecutionServiceOptions {
  instances: InstancePolicy;
  job: JobOptions;
  /** The caller's rights (what runs inside an action with a REAPI socket may do). */
  callerRights?: (ctx: CallContext) => readonly string[];
  /**
   * Set on an action's own REAPI socket (remoteApisSocketPath): what is executed through it
   * is that execution's nested work, with its submitter's rights.
   */
  nested?: { parent: string; rights: readonly string[] };
  /** Told of every operation an Execute call made, with the call (the action history). */
  onOperation?: (op: Operation, ctx: CallContext) => void;
}

/**
 * ListOperations' `name`: "" lists every operation; "operations" those of the unnamed
 * instance (named "operations/UUID"); "INSTANCE" or "INSTANCE/operations" those of INSTANCE
 * (named "INSTANCE/operations/UUID").
 */
function operationsOf(name: string, instances: InstancePolicy): (op: Operation) => boolean {
  const n = name.replace(/\/+$/, '');
  if (n === '') return () => true;
  const instance = n === 'operations' ? '' : instances.parse(n.endsWith('/operations') ? n.slice(0, -'/operations'.length) : n, 'name').value;
  return (op) => op.job.instance.value === instance;
}

const FILTER_TERM = /^\s*(done|stage)\s*(=|!=)\s*"?([A-Za-z]+)"?\s*$/;

/**
 * ListOperations' `filter`: terms joined by AND, each `done = true|false` or
 * `stage = QUEUED|EXECUTING|COMPLETED` (or `!=`). Anything else is refused, naming it.
 */
function parseFilter(filter: string): (op: Operation) => boolean {
  if (!filter.trim()) return () => true;
  const tests = filter.split(/\s+AND\s+/i).map((term) => {
    const m = FILTER_TERM.exec(term);
    const value = m?.[3] ?? '';
    const ok = m && (m[1] === 'done' ? ['true', 'false'].includes(value) : ['QUEUED', 'EXECUTING', 'COMPLETED'].includes(value));
    if (!m || !ok) {
      throw invalidArgument(
        `filter "${filter}": this server does not implement "${term.trim()}" (it filters on done = true|false and stage = QUEUED|EXECUTING|COMPLETED, with = or !=, terms joined by AND)`,
        'filter',
      );
    }
    const test = m[1] === 'done' ? (op: Operation) => String(op.stage === 'COMPLETED') === value : (op: Operation) => op.stage === value;
    return m[2] === '=' ? test : (op: Operation) => !test(op);
  });
  return (op) => tests.every((t) => t(op));
}

export function executionServices(
  log: Logger,
  scheduler: Scheduler,
  cas: BlobStore,
  ac: ActionCache,
  opts: ExecutionServiceOptions,
): { execution: grpc.UntypedServiceImplementation; operations: grpc.UntypedServiceImplementation } {
  /** Stream an operation's updates until it is done or the client goes away. */
  const follow = async (op: Operation, out: StreamWriter<longrunning.IOperation>, finish: (r: re.IExecuteResponse) => Promise<re.IExecuteResponse>, cancelled: () => boolean): Promise<void> => {
    let lastStage: string | undefined;
    let wake: (() => void) | undefined;
    const onChange = (changed: Operation): void => {
      if (changed === op) wake?.();
    };
    // A deleted operation still follows its execution, which no longer reports to it.
    const onExecution = (ex: Execution): void => {
      if (ex === op.execution) wake?.();
    };
    scheduler.on('change', onChange);
    scheduler.on('execution', onExecution);
    try {
      for (;;) {
        if (op.stage === 'COMPLETED') {
          await out.write(toOperationMessage(op, await finish(op.response ?? {})));
          return;
        }
        if (op.stage !== lastStage) lastStage = op.stage;
        await out.write(toOperationMessage(op));
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, KEEPALIVE_MS).unref();
        });
        if (cancelled()) return;
      }
    } finally {
      scheduler.off('change', onChange);
      scheduler.off('execution', onExecution);
    }
  };

  return {
    execution: {
      Execute: serverStream(log, 'Execute', async (req: re.ExecuteRequest, out, ctx) => {
        const instance = opts.instances.parse(req.instanceName);
        const actionDigest = Digest.fromRequest(req.actionDigest, req.digestFunction, 'action_digest');
        const inline = async (r: re.IExecuteResponse): Promise<re.IExecuteResponse> =>
          r.result && (req.inlineStdout || req.inlineStderr || req.inlineOutputFiles.length > 0)
            ? { ...r, result: await inlineOutputs(cas, r.result, actionDigest.fn, { stdout: req.inlineStdout, stderr: req.inlineStderr, files: req.inlineOutputFiles }) }
            : r;
        const job = await buildJob(cas, instance, actionDigest, opts.job, req.executionPolicy?.priority ?? 0, (p) => void scheduler.poolFor(p));
        if (req.skipCacheLookup) job.skipCacheLookup = true;
        if (!req.skipCacheLookup && !job.doNotCache) {
          const cached = await ac.get(instance, actionDigest);
          if (cached) {
            const op = scheduler.recordCompleted(job, { result: cached, cachedResult: true, status: { code: Code.OK, message: '' } }, { client: ctx.peer });
            opts.onOperation?.(op, ctx);
            await out.write(toOperationMessage(op, await inline(op.response!)));
            return;
          }
        }
        const op = scheduler.submit(job, {
          client: ctx.peer,
          rights: opts.nested?.rights ?? opts.callerRights?.(ctx),
          ...(opts.nested ? { parent: opts.nested.parent } : {}),
        });
        opts.onOperation?.(op, ctx);
        // The client learns the operation's name only once the journal holds it (a restart keeps it).
        await op.recorded;
        await follow(op, out, inline, ctx.cancelled);
      }),

      WaitExecution: serverStream(log, 'WaitExecution', async (req: re.WaitExecutionRequest, out, ctx) => {
        if (!req.name) throw invalidArgument('name is empty: pass the name of the Operation Execute returned', 'name');
        const op = scheduler.get(req.name);
        await follow(op, out, async (r) => r, ctx.cancelled);
      }),
    },
    operations: {
      GetOperation: unary(log, 'GetOperation', async (req: longrunning.GetOperationRequest) => toOperationMessage(scheduler.get(req.name))),
      ListOperations: unary(log, 'ListOperations', async (req: longrunning.ListOperationsRequest) => {
        const inScope = operationsOf(req.name, opts.instances);
        const matches = parseFilter(req.filter);
        const all = scheduler
          .list()
          .filter((op) => inScope(op) && matches(op))
          .sort((a, b) => a.queuedAt.getTime() - b.queuedAt.getTime() || (a.name < b.name ? -1 : 1));
        const start = req.pageToken ? Number(Buffer.from(req.pageToken, 'base64url').toString()) : 0;
        if (!Number.isSafeInteger(start) || start < 0) throw invalidArgument(`page_token "${req.pageToken}" was not issued by this server`, 'page_token');
        const size = req.pageSize > 0 ? Math.min(req.pageSize, 1000) : 100;
        const page = all.slice(start, start + size);
        return {
          operations: page.map((op) => toOperationMessage(op)),
          nextPageToken: start + size < all.length ? Buffer.from(String(start + size)).toString('base64url') : '',
        };
      }),
      CancelOperation: unary(log, 'CancelOperation', async (req: longrunning.CancelOperationRequest) => {
        scheduler.cancel(req.name);
        return {};
      }),
      DeleteOperation: unary(log, 'DeleteOperation', async (req: longrunning.DeleteOperationRequest) => {
        scheduler.delete(req.name);
        return {};
      }),
      WaitOperation: unary(log, 'WaitOperation', async (req: longrunning.WaitOperationRequest) => {
        const op = scheduler.get(req.name);
        const timeoutMs = req.timeout ? protoTimeToMs(req.timeout)! : 60_000;
        if (op.stage !== 'COMPLETED') {
          await new Promise<void>((resolve) => {
            const t = setTimeout(done, timeoutMs);
            function done(): void {
              clearTimeout(t);
              scheduler.off('change', onChange);
              resolve();
            }
            const onChange = (o: Operation): void => {
              if (o === op && o.stage === 'COMPLETED') done();
            };
            scheduler.on('change', onChange);
          });
        }
        return toOperationMessage(op);
      }),
    },
  };
}
