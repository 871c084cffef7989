import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Code, failedPrecondition, notFound, StatusError } from '../util/status-error.js';
import type { Job, Operation, Stage } from './operation.js';
import { canonicalIsa, type PlatformRequirements } from './platform.js';

/** A set of worker slots for one ISA (or several ISAs one machine provides natively). */
export interface PoolSpec {
  name: string;
  /** Canonical ISA names this pool's workers provide. */
  isas: string[];
  slots: number;
  /** Why this pool is down, if it is (e.g. no binfmt_misc for an emulated ISA). */
  unavailable?: string;
}

export interface SchedulerEvents {
  /** An operation changed stage or finished. */
  change: (op: Operation) => void;
}

/** What the scheduler persists so that the queue and recent operations survive a restart. */
export interface OperationJournal {
  save(op: Operation): void;
  remove(name: string): void;
}

/**
 * Queues and operations, nothing about processes. Workers pull work with next(); identical
 * cacheable actions in flight share one operation; priorities order each pool's queue
 * (lower value first, as REAPI says), ties in arrival order.
 */
export class Scheduler extends EventEmitter {
  private readonly operations = new Map<string, Operation>();
  private readonly inflight = new Map<string, Operation>();
  private readonly queues = new Map<string, Operation[]>();
  private readonly waiting = new Map<string, Array<(op: Operation) => void>>();
  private seq = 0;
  private readonly order = new WeakMap<Operation, number>();
  private closed = false;
  get isClosed(): boolean {
    return this.closed;
  }

  constructor(
    readonly pools: readonly PoolSpec[],
    private readonly journal?: OperationJournal,
    private readonly retentionMs = 60 * 60 * 1000,
    /** Why the host cannot run an ISA (and the fix), for refusals that name it. */
    private readonly isaHint: (isa: string) => string | undefined = () => undefined,
  ) {
    super();
    for (const p of pools) {
      this.queues.set(p.name, []);
      this.waiting.set(p.name, []);
    }
    const sweep = setInterval(() => this.sweep(), Math.min(retentionMs, 60_000));
    sweep.unref();
    this.once('closed', () => clearInterval(sweep));
  }

  /**
   * The pool that can run an action: every ISA it asks for must be provided. A request no
   * pool can honour is refused at once (FAILED_PRECONDITION naming it), never left waiting.
   */
  poolFor(platform: PlatformRequirements): PoolSpec {
    const fits = this.pools.filter((p) => platform.isas.every((isa) => p.isas.includes(isa)));
    const up = fits.find((p) => !p.unavailable);
    if (up) return up;
    const isa = platform.isas.join(' + ');
    const offered = this.pools.filter((p) => !p.unavailable).flatMap((p) => p.isas);
    const reason = fits[0]?.unavailable ?? platform.isas.map((i) => this.isaHint(i)).find(Boolean);
    throw failedPrecondition(
      `no worker can run ISA=${isa}: ${reason ?? `this server offers ${offered.join(', ') || 'no ISA'}`}` +
        (reason ? '' : '. Add a worker pool for it in the config (execution.pools), or run `reexec init` to see which ISAs the host can emulate'),
      platform.isas.map((i) => ({ type: 'UNSUPPORTED_PLATFORM_PROPERTY', subject: 'ISA', description: i })),
    );
  }

  private dedupKey(job: Job): string {
    return `${job.instance.value}\u0000${job.actionDigest.key}/${job.actionDigest.sizeBytes}`;
  }

  /** Queue a job, or join the identical one already in flight. */
  submit(job: Job, client?: string): Operation {
    if (this.closed) throw new StatusError(Code.UNAVAILABLE, 'the server is shutting down; retry');
    const pool = this.poolFor(job.platform);
    const key = this.dedupKey(job);
    if (!job.doNotCache) {
      const existing = this.inflight.get(key);
      if (existing && existing.stage !== 'COMPLETED') return existing;
    }
    const op: Operation = {
      name: `operations/${randomUUID()}`,
      job,
      stage: 'QUEUED',
      pool: pool.name,
      queuedAt: new Date(),
      attempts: 0,
      abort: new AbortController(),
      client,
    };
    this.operations.set(op.name, op);
    if (!job.doNotCache) this.inflight.set(key, op);
    this.enqueue(op);
    return op;
  }

  /** An operation answered without running (an action cache hit), so WaitExecution and GetOperation know it. */
  recordCompleted(job: Job, response: Operation['response'], client?: string): Operation {
    const now = new Date();
    const op: Operation = {
      name: `operations/${randomUUID()}`,
      job,
      stage: 'COMPLETED',
      pool: this.poolFor(job.platform).name,
      queuedAt: now,
      completedAt: now,
      response,
      attempts: 0,
      abort: new AbortController(),
      client,
    };
    this.operations.set(op.name, op);
    return op;
  }

  /** Put back an operation loaded from the journal after a restart. */
  restore(op: Operation, failure?: Operation['response']): void {
    this.operations.set(op.name, op);
    if (failure) {
      op.stage = 'QUEUED';
      this.complete(op, failure);
      return;
    }
    if (op.stage === 'COMPLETED') return;
    op.stage = 'QUEUED';
    if (!op.job.doNotCache) this.inflight.set(this.dedupKey(op.job), op);
    this.enqueue(op);
  }

  private enqueue(op: Operation): void {
    this.order.set(op, this.seq++);
    this.journal?.save(op);
    const waiter = this.waiting.get(op.pool)!.shift();
    if (waiter) {
      this.start(op);
      waiter(op);
      return;
    }
    const q = this.queues.get(op.pool)!;
    const key = (o: Operation): [number, number] => [o.job.priority, this.order.get(o)!];
    const [p, s] = key(op);
    let i = q.length;
    while (i > 0) {
      const [qp, qs] = key(q[i - 1]!);
      if (qp < p || (qp === p && qs < s)) break;
      i--;
    }
    q.splice(i, 0, op);
    this.emit('change', op);
  }

  private start(op: Operation): void {
    op.stage = 'EXECUTING';
    op.startedAt = new Date();
    op.attempts++;
    this.journal?.save(op);
    this.emit('change', op);
  }

  /** A worker of `pool` takes the next operation, waiting until there is one. */
  next(pool: string, signal?: AbortSignal): Promise<Operation> {
    const q = this.queues.get(pool);
    if (!q) throw new Error(`unknown pool ${pool}`);
    const op = q.shift();
    if (op) {
      this.start(op);
      return Promise.resolve(op);
    }
    return new Promise((resolve, reject) => {
      const waiters = this.waiting.get(pool)!;
      const waiter = (o: Operation): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve(o);
      };
      const onAbort = (): void => {
        const i = waiters.indexOf(waiter);
        if (i >= 0) waiters.splice(i, 1);
        reject(new Error('worker stopped'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      waiters.push(waiter);
    });
  }

  /** Finish an operation with its ExecuteResponse. */
  complete(op: Operation, response: Operation['response']): void {
    if (op.stage === 'COMPLETED') return;
    op.stage = 'COMPLETED';
    op.completedAt = new Date();
    op.response = response;
    const key = this.dedupKey(op.job);
    if (this.inflight.get(key) === op) this.inflight.delete(key);
    this.journal?.save(op);
    this.emit('change', op);
  }

  get(name: string): Operation {
    const op = this.operations.get(name);
    if (!op) throw notFound(`operation "${name}" does not exist (finished operations are kept for ${Math.round(this.retentionMs / 60000)} min)`);
    return op;
  }

  list(): Operation[] {
    return [...this.operations.values()];
  }

  /** Cancel: a queued operation finishes CANCELLED at once; a running one has its process tree killed. */
  cancel(name: string): void {
    const op = this.get(name);
    if (op.stage === 'COMPLETED') return;
    if (op.stage === 'QUEUED') {
      const q = this.queues.get(op.pool)!;
      const i = q.indexOf(op);
      if (i >= 0) q.splice(i, 1);
      this.complete(op, { status: { code: Code.CANCELLED, message: `operation ${name} was cancelled before it ran` } });
      return;
    }
    op.abort.abort();
  }

  delete(name: string): void {
    const op = this.get(name);
    if (op.stage !== 'COMPLETED') this.cancel(name);
    this.operations.delete(name);
    this.journal?.remove(name);
  }

  /** Queue depth per pool, and running operations, for status. */
  queueDepths(): Record<string, number> {
    return Object.fromEntries([...this.queues].map(([k, v]) => [k, v.length]));
  }

  private sweep(): void {
    const cutoff = Date.now() - this.retentionMs;
    for (const [name, op] of this.operations) {
      if (op.stage === 'COMPLETED' && (op.completedAt?.getTime() ?? 0) < cutoff) {
        this.operations.delete(name);
        this.journal?.remove(name);
      }
    }
  }

  close(): void {
    this.closed = true;
    this.emit('closed');
    for (const op of this.operations.values()) if (op.stage === 'EXECUTING') op.abort.abort();
  }
}

export function poolIsas(isas: readonly string[]): string[] {
  return isas.map((i) => canonicalIsa(i) ?? i);
}

export type { Stage };
