import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { re } from '../proto.js';
import { Code, failedPrecondition, notFound, StatusError } from '../util/status-error.js';
import { Execution, Operation, type Job, type Stage, type Submitter } from './operation.js';
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
  /** An execution was queued, started or finished (once per run, however many operations wait on it). */
  execution: (ex: Execution) => void;
}

/** What the scheduler persists so that the queue and recent operations survive a restart. */
export interface OperationJournal {
  save(op: Operation): void;
  remove(name: string): void;
}

type Waiter = (ex: Execution) => void;

/** Executions nested inside each other at most this deep (an action that Executes itself forever stops here). */
export const MAX_NESTING = 16;

/**
 * Queues, executions and operations, nothing about processes. Workers pull executions with
 * next(); each Execute call gets an Operation of its own, and identical cacheable actions in
 * flight share one Execution; priorities order each pool's queue (lower value first, as REAPI
 * says), ties in arrival order.
 *
 * Nested work: an action with a REAPI socket inside its sandbox (remoteApisSocketPath) may
 * Execute more actions through it and wait for them while it holds a worker slot. With every
 * slot held that way nothing would ever run, so a running action lends its slot to the work it
 * waits on: nextNested() hands the lending slot the executions its own operations wait on.
 */
export class Scheduler extends EventEmitter {
  private readonly operations = new Map<string, Operation>();
  /** Queued and running executions, by id. */
  private readonly active = new Map<string, Execution>();
  private readonly inflight = new Map<string, Execution>();
  private readonly queues = new Map<string, Execution[]>();
  private readonly waiting = new Map<string, Waiter[]>();
  /** Slots lent by running executions, by the lender's id: they take only the lender's nested work. */
  private readonly lenders = new Map<string, Waiter[]>();
  private seq = 0;
  private readonly order = new WeakMap<Execution, number>();
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

  /**
   * Executions are shared by identical actions of one instance; an action with a REAPI socket
   * only between submitters with the same rights (what runs inside gets them).
   */
  private dedupKey(job: Job, rights: readonly string[] | undefined): string {
    const who = job.platform.remoteApisSocket ? `\u0000${[...(rights ?? [])].sort().join(',')}` : '';
    return `${job.instance.value}\u0000${job.actionDigest.key}/${job.actionDigest.sizeBytes}${who}`;
  }

  /** The executions whose nested work `id` is (its parents, their parents…), and itself. */
  private lineage(id: string | undefined): Set<string> {
    const out = new Set<string>();
    const todo = id ? [id] : [];
    while (todo.length > 0) {
      const x = todo.pop()!;
      if (out.has(x)) continue;
      out.add(x);
      for (const op of this.active.get(x)?.operations ?? []) if (op.submitter.parent) todo.push(op.submitter.parent);
    }
    return out;
  }

  /** Queue a job for one client, or let it wait on the identical execution already in flight. */
  submit(job: Job, submitter: Submitter = {}): Operation {
    if (this.closed) throw new StatusError(Code.UNAVAILABLE, 'the server is shutting down; retry');
    const pool = this.poolFor(job.platform);
    const rights = job.platform.remoteApisSocket ? submitter.rights : undefined;
    const key = this.dedupKey(job, rights);
    const now = new Date();
    const lineage = this.lineage(submitter.parent);
    if (lineage.size >= MAX_NESTING) {
      throw failedPrecondition(`actions Executed through REAPI sockets inside actions are nested ${lineage.size} deep, the most this server runs is ${MAX_NESTING}: does an action Execute itself?`);
    }
    if (!job.doNotCache) {
      const existing = this.inflight.get(key);
      // Never wait on an execution that waits on us: an action that Executes itself through its own socket.
      if (existing && existing.stage !== 'COMPLETED' && !lineage.has(existing.id)) {
        const op = this.addOperation(new Operation(this.newName(job), existing, now, submitter));
        if (existing.stage === 'QUEUED') this.joinedQueued(existing, op, job.priority);
        return op;
      }
    }
    const ex = new Execution(randomUUID(), job, pool.name, now, rights);
    this.active.set(ex.id, ex);
    if (!job.doNotCache) this.inflight.set(key, ex);
    const op = this.addOperation(new Operation(this.newName(job), ex, now, submitter));
    this.enqueue(ex);
    return op;
  }

  /** An operation answered without running (an action cache hit), so WaitExecution and GetOperation know it. */
  recordCompleted(job: Job, response: re.IExecuteResponse, submitter: Submitter = {}): Operation {
    const now = new Date();
    const ex = new Execution(randomUUID(), job, this.poolFor(job.platform).name, now);
    ex.stage = 'COMPLETED';
    ex.completedAt = now;
    ex.response = response;
    const op = new Operation(this.newName(job), ex, now, submitter);
    this.operations.set(op.name, op);
    this.journal?.save(op);
    return op;
  }

  /**
   * Operation names: `operations/UUID`, under the instance for named instances
   * (`INSTANCE/operations/UUID`), so that ListOperations can list one instance's.
   */
  private newName(job: Job): string {
    return job.instance.value ? `${job.instance.value}/operations/${randomUUID()}` : `operations/${randomUUID()}`;
  }

  private addOperation(op: Operation): Operation {
    this.operations.set(op.name, op);
    op.execution.operations.add(op);
    this.journal?.save(op);
    this.emit('change', op);
    return op;
  }

  /** A finished operation loaded from the journal after a restart. */
  restoreCompleted(op: Operation): void {
    this.operations.set(op.name, op);
  }

  /** An unfinished execution loaded from the journal, with the operations waiting on it; `failure` ends it at once. */
  restoreExecution(ex: Execution, ops: Operation[], failure?: re.IExecuteResponse): void {
    for (const op of ops) {
      this.operations.set(op.name, op);
      ex.operations.add(op);
    }
    this.active.set(ex.id, ex);
    ex.stage = 'QUEUED';
    if (failure) {
      this.complete(ex, failure);
      return;
    }
    if (!ex.job.doNotCache) this.inflight.set(this.dedupKey(ex.job, ex.rights), ex);
    this.enqueue(ex);
  }

  private rank(ex: Execution): [number, number] {
    return [ex.job.priority, this.order.get(ex)!];
  }

  private before(a: Execution, b: Execution): boolean {
    const [ap, as] = this.rank(a);
    const [bp, bs] = this.rank(b);
    return ap < bp || (ap === bp && as < bs);
  }

  private insert(q: Execution[], ex: Execution): void {
    let i = q.length;
    while (i > 0 && !this.before(q[i - 1]!, ex)) i--;
    q.splice(i, 0, ex);
  }

  /** Lenders whose nested work `ex` is: the parents of the operations waiting on it. */
  private lenderFor(ex: Execution): Waiter | undefined {
    for (const op of ex.operations) {
      const parent = op.submitter.parent;
      const w = parent ? this.lenders.get(parent)?.shift() : undefined;
      if (w) return w;
    }
    return undefined;
  }

  private enqueue(ex: Execution): void {
    this.order.set(ex, this.seq++);
    this.saveAll(ex);
    const waiter = this.waiting.get(ex.pool)!.shift() ?? this.lenderFor(ex);
    if (waiter) {
      this.start(ex);
      waiter(ex);
      return;
    }
    this.insert(this.queues.get(ex.pool)!, ex);
    this.emitAll(ex);
  }

  /** Another operation waits on a queued execution: it may raise its priority, or bring a lender. */
  private joinedQueued(ex: Execution, op: Operation, priority: number): void {
    const q = this.queues.get(ex.pool)!;
    if (priority < ex.job.priority) {
      ex.job.priority = priority;
      const i = q.indexOf(ex);
      if (i >= 0) {
        q.splice(i, 1);
        this.insert(q, ex);
      }
    }
    const parent = op.submitter.parent;
    const lender = parent ? this.lenders.get(parent)?.shift() : undefined;
    if (lender) {
      const i = q.indexOf(ex);
      if (i >= 0) q.splice(i, 1);
      this.start(ex);
      lender(ex);
    }
  }

  private start(ex: Execution): void {
    ex.stage = 'EXECUTING';
    ex.startedAt = new Date();
    ex.attempts++;
    this.saveAll(ex);
    this.emitAll(ex);
  }

  private saveAll(ex: Execution): void {
    for (const op of ex.operations) this.journal?.save(op);
  }

  private emitAll(ex: Execution): void {
    this.emit('execution', ex);
    for (const op of ex.operations) this.emit('change', op);
  }

  private wait(list: Waiter[], signal?: AbortSignal): Promise<Execution> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(new Error('worker stopped'));
      const waiter: Waiter = (ex) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(ex);
      };
      const onAbort = (): void => {
        const i = list.indexOf(waiter);
        if (i >= 0) list.splice(i, 1);
        reject(new Error('worker stopped'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      list.push(waiter);
    });
  }

  /** A worker of `pool` takes the next execution, waiting until there is one. */
  next(pool: string, signal?: AbortSignal): Promise<Execution> {
    const q = this.queues.get(pool);
    if (!q) throw new Error(`unknown pool ${pool}`);
    const ex = q.shift();
    if (ex) {
      this.start(ex);
      return Promise.resolve(ex);
    }
    return this.wait(this.waiting.get(pool)!, signal);
  }

  /**
   * The slot lent by running execution `lender` takes the next execution one of its nested
   * operations waits on (from any pool: the platform, not the pool, decides how it runs),
   * waiting until there is one. `signal` ends the loan.
   */
  nextNested(lender: string, signal: AbortSignal): Promise<Execution> {
    let best: { q: Execution[]; ex: Execution } | undefined;
    for (const q of this.queues.values()) {
      for (const ex of q) {
        if (![...ex.operations].some((op) => op.submitter.parent === lender)) continue;
        if (!best || this.before(ex, best.ex)) best = { q, ex };
        break; // queues are sorted: the first eligible one of each is its best
      }
    }
    if (best) {
      best.q.splice(best.q.indexOf(best.ex), 1);
      this.start(best.ex);
      return Promise.resolve(best.ex);
    }
    let list = this.lenders.get(lender);
    if (!list) this.lenders.set(lender, (list = []));
    const waiting = this.wait(list, signal);
    const forget = (): void => {
      if (list.length === 0 && this.lenders.get(lender) === list) this.lenders.delete(lender);
    };
    waiting.then(forget, forget);
    return waiting;
  }

  /** Finish an execution with its ExecuteResponse: every operation still waiting on it is done. */
  complete(ex: Execution, response: re.IExecuteResponse): void {
    if (ex.stage === 'COMPLETED') return;
    ex.stage = 'COMPLETED';
    ex.completedAt = new Date();
    ex.response = response;
    this.active.delete(ex.id);
    this.forgetInflight(ex);
    this.saveAll(ex);
    this.emitAll(ex);
    // The input tree is only needed to run it: finished operations are kept for an hour.
    ex.job.inputTree = undefined;
  }

  private forgetInflight(ex: Execution): void {
    const key = this.dedupKey(ex.job, ex.rights);
    if (this.inflight.get(key) === ex) this.inflight.delete(key);
  }

  get(name: string): Operation {
    const op = this.operations.get(name);
    if (!op) throw notFound(`operation "${name}" does not exist (it was deleted, or it finished more than ${Math.round(this.retentionMs / 60000)} min ago)`);
    return op;
  }

  /** Every operation the scheduler knows (running, queued, and finished within the retention). */
  list(): Operation[] {
    return [...this.operations.values()];
  }

  /** Queued executions, in the order they will run within each pool. */
  queued(): Execution[] {
    return [...this.queues.values()].flat();
  }

  /**
   * Cancel one operation. While other operations still wait on its execution, only this one
   * ends (CANCELLED) and the execution goes on for them. Otherwise a queued execution ends
   * CANCELLED at once and a running one has its process tree killed (the operation then ends
   * when the worker reports it).
   */
  cancel(name: string): void {
    const op = this.get(name);
    if (op.stage === 'COMPLETED') return;
    const ex = op.execution;
    if (ex.operations.size > 1) {
      ex.operations.delete(op);
      op.finishAlone({ status: { code: Code.CANCELLED, message: `operation ${name} was cancelled (the action goes on for the other clients waiting on it)` } });
      this.journal?.save(op);
      this.emit('change', op);
      return;
    }
    if (ex.stage === 'QUEUED') {
      const q = this.queues.get(ex.pool)!;
      const i = q.indexOf(ex);
      if (i >= 0) q.splice(i, 1);
      this.complete(ex, { status: { code: Code.CANCELLED, message: `operation ${name} was cancelled before it ran` } });
      return;
    }
    // Nobody else may join an execution that is being killed.
    this.forgetInflight(ex);
    ex.abort.abort();
  }

  /**
   * Cancel what was Executed through the REAPI socket of execution `parent`, now that it has
   * ended: nobody is left to wait for it (work other clients wait on too goes on for them).
   */
  cancelNested(parent: string): void {
    for (const op of [...this.operations.values()]) {
      if (op.submitter.parent === parent && op.stage !== 'COMPLETED') this.cancel(op.name);
    }
  }

  /**
   * Forget an operation. REAPI/longrunning: "It does not cancel the operation": its execution
   * goes on (for the other operations on it, and for the action cache).
   */
  delete(name: string): void {
    const op = this.get(name);
    op.execution.operations.delete(op);
    this.operations.delete(name);
    this.journal?.remove(name);
  }

  /** Queue depth per pool, for status. */
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
    for (const ex of this.active.values()) if (ex.stage === 'EXECUTING') ex.abort.abort();
  }
}

export function poolIsas(isas: readonly string[]): string[] {
  return isas.map((i) => canonicalIsa(i) ?? i);
}

export type { Stage };
