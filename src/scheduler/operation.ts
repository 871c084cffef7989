import type { Digest } from '../digest/digest.js';
import type { InstanceName } from '../digest/instance-name.js';
import type { IAction, ICommand, re } from '../proto.js';
import type { InputTree } from '../worker/input-tree.js';
import type { PlatformRequirements } from './platform.js';

export type Stage = 'QUEUED' | 'EXECUTING' | 'COMPLETED';
/**
 * Within EXECUTING: fetching and staging inputs, running the command, storing outputs; for an
 * action forwarded to the upstream: sending its inputs there, queued there, running there
 * ('running'), fetching its outputs from there.
 */
export type ExecutionPhase = 'staging' | 'running' | 'uploading' | 'forwarding' | 'queued-upstream' | 'fetching';

/** Everything a worker needs to run an action, validated at Execute time. */
export interface Job {
  instance: InstanceName;
  actionDigest: Digest;
  action: IAction;
  command: ICommand;
  platform: PlatformRequirements;
  /** Fetched and validated at Execute time; re-fetched if the daemon restarted; dropped once run. */
  inputTree?: InputTree;
  priority: number;
  doNotCache: boolean;
  timeoutMs: number;
  /** The client's skip_cache_lookup: passed on when the action is forwarded to the upstream. */
  skipCacheLookup?: boolean;
}

/** Who asked for an operation, as far as the execution of the action is concerned. */
export interface Submitter {
  /** The client's peer, for the status view. */
  client?: string;
  /**
   * The rights of the client, for actions with a REAPI socket inside the sandbox
   * (remoteApisSocketPath): what runs inside may do what its submitter may.
   */
  rights?: readonly string[];
  /** The execution whose REAPI socket this came through (a nested Execute), if any. */
  parent?: string;
}

/**
 * One run of an action: queued, running in a worker slot, or done. Identical cacheable
 * actions in flight share one Execution, each client holding an Operation of its own on it,
 * so one client's cancel or delete never ends another's build.
 */
export class Execution {
  stage: Stage = 'QUEUED';
  startedAt?: Date;
  completedAt?: Date;
  /** Set when done: the ExecuteResponse of the run. */
  response?: re.IExecuteResponse;
  /** The worker slot running it, for the status view. */
  worker?: string;
  /** What the worker is doing while EXECUTING, for the status view. */
  phase?: ExecutionPhase;
  attempts = 0;
  /** The lease of the worker running it (scheduler-owned). */
  lease?: { readonly id: string; readonly worker: string; deadline: number; readonly signal: AbortSignal };
  /** Stops the running action (last waiting operation cancelled, daemon shutdown). */
  readonly abort = new AbortController();
  /** The operations that still wait on this execution (neither cancelled nor deleted). */
  readonly operations = new Set<Operation>();

  constructor(
    /** Stable across restarts (journal), unique among executions. */
    readonly id: string,
    public job: Job,
    public pool: string,
    readonly queuedAt: Date,
    /** The submitter's rights, when the action has a REAPI socket; see Submitter.rights. */
    readonly rights?: readonly string[],
  ) {}

  /** The operation names waiting on this execution, the oldest first. */
  get operationNames(): string[] {
    return [...this.operations].map((o) => o.name);
  }
}

/**
 * What one Execute call returned: a name the client can wait on, cancel or delete. It shows
 * its execution's progress until it is done, or until it was cancelled on its own while other
 * operations kept the execution going.
 */
export class Operation {
  private own?: { response: re.IExecuteResponse; completedAt: Date };
  /**
   * Settles when the journal holds the operation: its name is handed to the client only then,
   * so a name a client has learnt survives a crash of the daemon (WaitExecution after the restart).
   */
  recorded?: Promise<void>;

  constructor(
    readonly name: string,
    public execution: Execution,
    readonly queuedAt: Date,
    readonly submitter: Submitter = {},
  ) {}

  get stage(): Stage {
    return this.own ? 'COMPLETED' : this.execution.stage;
  }

  get response(): re.IExecuteResponse | undefined {
    return this.own?.response ?? (this.execution.stage === 'COMPLETED' ? this.execution.response : undefined);
  }

  get completedAt(): Date | undefined {
    return this.own?.completedAt ?? this.execution.completedAt;
  }

  get job(): Job {
    return this.execution.job;
  }

  get pool(): string {
    return this.execution.pool;
  }

  get startedAt(): Date | undefined {
    return this.execution.startedAt;
  }

  get phase(): ExecutionPhase | undefined {
    return this.execution.phase;
  }

  get client(): string | undefined {
    return this.submitter.client;
  }

  /** Finish this operation alone (cancelled while others still wait on its execution). */
  finishAlone(response: re.IExecuteResponse, at = new Date()): void {
    this.own = { response, completedAt: at };
  }
}

export const isDone = (op: Operation): boolean => op.stage === 'COMPLETED';
