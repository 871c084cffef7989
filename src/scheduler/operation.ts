import type { Digest } from '../digest/digest.js';
import type { InstanceName } from '../digest/instance-name.js';
import type { IAction, ICommand, re } from '../proto.js';
import type { InputTree } from '../worker/input-tree.js';
import type { PlatformRequirements } from './platform.js';

export type Stage = 'QUEUED' | 'EXECUTING' | 'COMPLETED';
/** Within EXECUTING: fetching and staging inputs, running the command, storing outputs. */
export type ExecutionPhase = 'staging' | 'running' | 'uploading';

/** Everything a worker needs to run an action, validated at Execute time. */
export interface Job {
  instance: InstanceName;
  actionDigest: Digest;
  action: IAction;
  command: ICommand;
  platform: PlatformRequirements;
  /** Fetched and validated at Execute time; re-fetched if the daemon restarted. */
  inputTree?: InputTree;
  priority: number;
  doNotCache: boolean;
  timeoutMs: number;
}

/** The scheduler's view of one execution, shared by every client waiting on it. */
export interface Operation {
  name: string;
  job: Job;
  stage: Stage;
  pool: string;
  queuedAt: Date;
  startedAt?: Date;
  completedAt?: Date;
  /** Set when done: the ExecuteResponse clients get. */
  response?: re.IExecuteResponse;
  /** The worker slot running it, for the status view. */
  worker?: string;
  /** What the worker is doing while EXECUTING, for the status view. */
  phase?: ExecutionPhase;
  attempts: number;
  /** Cancels the running action (CancelOperation, daemon shutdown). */
  abort: AbortController;
  /** Client's peer, for the status view. */
  client?: string;
}

export const isDone = (op: Operation): boolean => op.stage === 'COMPLETED';
