import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { re } from '../proto.js';
import { systemClock, type Clock } from '../util/clock.js';
import { Code, failedPrecondition, notFound, StatusError } from '../util/status-error.js';
import { Execution, Operation, type Job, type Stage, type Submitter } from './operation.js';
import { canonicalIsa, offersAll, type OfferedProperties, type PlatformRequirements } from './platform.js';

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
  /** Record the operation; settles when the record is durable (or, best effort, could not be written). */
  save(op: Operation): void | Promise<void>;
  remove(name: string): void;
}

/**
 * A worker as the scheduler sees it: a name, and which jobs it can run. Local slots and bots
 * (Remote Workers API) are both workers; they take work as leases.
 */
export interface Worker {
  readonly name: string;
  /** The pool its executions are counted under (status, metrics): a local pool's name, or BOTS_POOL. */
  readonly pool?: string;
  accepts(job: Job): boolean;
}

/**
 * Work handed to one worker: the execution it runs, until `deadline` (ms since the epoch)
 * unless renewed. The holder reports back with complete(), renew() or fail(); `signal` tells
 * it to stop (the client cancelled, the daemon stops, or the lease was lost and runs elsewhere).
 */
export interface Lease {
  readonly id: string;
  readonly execution: Execution;
  readonly worker: string;
  deadline: number;
  readonly signal: AbortSignal;
}

/** A lease as plain data, for status and logs. */
export function describeLease(l: Lease): { leaseId: string; execution: string; actionDigest: string; worker: string; deadline: number } {
  return { leaseId: l.id, execution: l.execution.id, actionDigest: l.execution.job.actionDigest.toString(), worker: l.worker, deadline: l.deadline };
}

interface LeaseRecord extends Lease {
  readonly revoke: AbortController;
}

type Waiter = { worker: Worker; give: (lease: LeaseRecord) => void };

/** A bot (or any remote worker) the scheduler knows: what it offers and when it was last heard of. */
interface RemoteWorker {
  offer: OfferedProperties;
  connected: boolean;
  lastSeen: number;
}

export interface SchedulerOptions {
  journal?: OperationJournal;
  retentionMs?: number;
  /** Why the host cannot run an ISA (and the fix), for refusals that name it. */
  isaHint?: (isa: string) => string | undefined;
  clock?: Clock;
  /** How many times an execution is leased before a lost lease ends it (UNAVAILABLE). */
  maxAttempts?: number;
  /** How long a bot that went away still makes its properties valid for new actions. */
  remoteGraceMs?: number;
  /** Which actions the upstream worker runs (the `upstream` config's `execute`); default: none. */
  forward?: ForwardMode;
}

/**
 * Which actions go to the upstream (another REAPI server): `local` none, `upstream` every one,
 * `unsupported` those no local pool or bot can run.
 */
export type ForwardMode = 'local' | 'upstream' | 'unsupported';
export const FORWARD_MODES: readonly ForwardMode[] = ['local', 'upstream', 'unsupported'];

/** The label of executions forwarded to the upstream: their "pool" in status and metrics. */
export const UPSTREAM_POOL = 'upstream';

/** The label of executions only remote workers (bots) can run: their "pool" in status and metrics. */
export const BOTS_POOL = 'bots';

/** Executions nested inside each other at most this deep (an action that Executes itself forever stops here). */
export const MAX_NESTING = 16;

/**
 * Queues, executions, operations and leases, nothing about processes. Workers (local slots,
 * bots) take executions as leases with lease(); each Execute call gets an Operation of its
 * own, and identical cacheable actions in flight share one Execution; priorities order the
 * queue (lower value first, as REAPI says), ties in arrival order; a worker takes the first
 * queued execution it can run.
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
  private readonly queue: Execution[] = [];
  private readonly waiting: Waiter[] = [];
  private readonly leases = new Map<string, LeaseRecord>();
  private readonly remotes = new Map<string, RemoteWorker>();
  /** Slots lent by running executions, by the lender's id: they take only the lender's nested work. */
  private readonly lenders = new Map<string, Waiter[]>();
  private seq = 0;
  private readonly order = new WeakMap<Execution, number>();
  private closed = false;
  private readonly journal?: OperationJournal;
  private readonly retentionMs: number;
  private readonly isaHint: (isa: string) => string | undefined;
  readonly clock: Clock;
  readonly maxAttempts: number;
  private readonly remoteGraceMs: number;
  /** Which actions the upstream worker runs. */
  readonly forward: ForwardMode;
  get isClosed(): boolean {
    return this.closed;
  }

  constructor(
    readonly pools: readonly PoolSpec[],
    opts: SchedulerOptions | OperationJournal = {},
    retentionMs?: number,
    isaHint?: (isa: string) => string | undefined,
  ) {
    super();
    const o: SchedulerOptions = 'save' in opts ? { journal: opts, retentionMs, isaHint } : { ...opts, ...(retentionMs ? { retentionMs } : {}), ...(isaHint ? { isaHint } : {}) };
    this.journal = o.journal;
    this.retentionMs = o.retentionMs ?? 60 * 60 * 1000;
    this.isaHint = o.isaHint ?? (() => undefined);
    this.clock = o.clock ?? systemClock;
    this.maxAttempts = o.maxAttempts ?? 3;
    this.remoteGraceMs = o.remoteGraceMs ?? 10 * 60 * 1000;
    this.forward = o.forward ?? 'local';
    const sweep = setInterval(() => this.sweep(), Math.min(this.retentionMs, 60_000));
    sweep.unref();
    const expiry = setInterval(() => this.expireLeases(), 500);
    expiry.unref();
    this.once('closed', () => {
      clearInterval(sweep);
      clearInterval(expiry);
    });
  }

  /** A worker for the slots of local pool `pool`. */
  localWorker(pool: PoolSpec): Worker {
    return { name: pool.name, pool: pool.name, accepts: (job) => this.forward !== 'upstream' && this.poolFits(pool, job.platform) };
  }

  /** The worker that forwards actions to the upstream `url`: it takes what forwarded() says goes there. */
  upstreamWorker(url: string): Worker {
    return { name: url, pool: UPSTREAM_POOL, accepts: (job) => this.forwarded(job.platform) };
  }

  /** Whether an action goes to the upstream: every one, or (`unsupported`) one no local pool or bot can run. */
  forwarded(platform: PlatformRequirements): boolean {
    if (this.forward === 'upstream') return true;
    if (this.forward !== 'unsupported') return false;
    return !this.pools.some((p) => this.poolFits(p, platform)) && !this.liveRemotes().some((o) => offersAll(o, platform.raw));
  }

  /** Whether `worker` may take `job`: with every action forwarded, only the upstream worker takes any. */
  private takes(worker: Worker, job: Job): boolean {
    return (this.forward !== 'upstream' || worker.pool === UPSTREAM_POOL) && worker.accepts(job);
  }

  /** A running execution's phase changed (e.g. upstream progress): operations following it hear of it. */
  progressed(ex: Execution): void {
    if (ex.stage === 'EXECUTING') this.emitAll(ex);
  }

  private poolFits(pool: PoolSpec, platform: PlatformRequirements): boolean {
    return !pool.unavailable && (platform.extra?.length ?? 0) === 0 && platform.isas.every((isa) => pool.isas.includes(isa));
  }

  /** A bot said what it offers: it takes work matching it, and makes its properties valid for new actions. */
  remoteConnected(id: string, offer: OfferedProperties): void {
    this.remotes.set(id, { offer, connected: true, lastSeen: this.clock.now() });
  }

  /** A bot was heard from. */
  remoteSeen(id: string): void {
    const r = this.remotes.get(id);
    if (r) r.lastSeen = this.clock.now();
  }

  /** A bot's session ended: its properties stay valid for remoteGraceMs. */
  remoteGone(id: string): void {
    const r = this.remotes.get(id);
    if (r) {
      r.connected = false;
      r.lastSeen = this.clock.now();
    }
  }

  private liveRemotes(): OfferedProperties[] {
    const now = this.clock.now();
    return [...this.remotes.values()].filter((r) => r.connected || now - r.lastSeen <= this.remoteGraceMs).map((r) => r.offer);
  }

  /** Whether a bot connected (or seen within the grace time) offers property name=value: it is then valid in actions. */
  offeredByRemote(name: string, value: string): boolean {
    return this.liveRemotes().some((o) => offersAll(o, [{ name, value }]));
  }

  /**
   * The kind of worker that can run an action: a local pool whose ISAs it asks for, or else
   * the bots (one connected, or seen within the grace time, offers every property it asks
   * for). A request nothing can honour is refused at once (FAILED_PRECONDITION naming it),
   * never left waiting.
   */
  poolFor(platform: PlatformRequirements): { name: string } {
    if (this.forward === 'upstream') return { name: UPSTREAM_POOL };
    const up = this.pools.find((p) => this.poolFits(p, platform));
    if (up) return up;
    if (this.liveRemotes().some((o) => offersAll(o, platform.raw))) return { name: BOTS_POOL };
    if (this.forward === 'unsupported') return { name: UPSTREAM_POOL };
    const extra = platform.extra ?? [];
    if (extra.length > 0) {
      const p = extra[0]!;
      throw failedPrecondition(
        `platform property ${p.name}="${p.value}" together with ${platform.raw.filter((r) => r !== p).map((r) => `${r.name}=${r.value}`).join(', ') || 'nothing else'}: no connected bot offers all of these`,
        extra.map((e) => ({ type: 'UNSUPPORTED_PLATFORM_PROPERTY', subject: e.name, description: `value "${e.value}"` })),
      );
    }
    const fits = this.pools.filter((p) => platform.isas.every((isa) => p.isas.includes(isa)));
    const isa = platform.isas.join(' + ');
    const offered = [...this.pools.filter((p) => !p.unavailable).flatMap((p) => p.isas), ...this.liveRemotes().flatMap((o) => [...(o.get('ISA') ?? [])])];
    const reason = fits[0]?.unavailable ?? platform.isas.map((i) => this.isaHint(i)).find(Boolean);
    const noWorkers = this.pools.length === 0 && this.liveRemotes().length === 0;
    throw failedPrecondition(
      noWorkers
        ? `no worker can run this action: this server has no local worker pools (execution.pools is empty) and no bot is connected; start a buildbox-worker against it (README: "More machines")`
        : `no worker can run ISA=${isa}${platform.raw.length ? ` with ${platform.raw.map((r) => `${r.name}=${r.value}`).join(', ')}` : ''}: ${reason ?? `this server offers ${[...new Set(offered)].join(', ') || 'no ISA'}`}` +
            (reason ? '' : '. Add a worker pool for it in the config (execution.pools), connect a bot offering it, or run `reexec init` to see which ISAs the host can emulate'),
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
    op.recorded = this.journal?.save(op) ?? undefined;
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

  private insert(ex: Execution): void {
    const q = this.queue;
    let i = q.length;
    while (i > 0 && !this.before(q[i - 1]!, ex)) i--;
    q.splice(i, 0, ex);
  }

  /** Lenders whose nested work `ex` is: the parents of the operations waiting on it. */
  private lenderFor(ex: Execution): Waiter | undefined {
    for (const op of ex.operations) {
      const parent = op.submitter.parent;
      const list = parent ? this.lenders.get(parent) : undefined;
      const i = list?.findIndex((w) => this.takes(w.worker, ex.job)) ?? -1;
      if (list && i >= 0) return list.splice(i, 1)[0];
    }
    return undefined;
  }

  private enqueue(ex: Execution): void {
    // A requeued execution keeps its place among equals.
    if (!this.order.has(ex)) this.order.set(ex, this.seq++);
    this.saveAll(ex);
    const i = this.waiting.findIndex((w) => this.takes(w.worker, ex.job));
    const waiter = i >= 0 ? this.waiting.splice(i, 1)[0] : this.lenderFor(ex);
    if (waiter) {
      waiter.give(this.start(ex, waiter.worker));
      return;
    }
    this.insert(ex);
    this.emitAll(ex);
  }

  /** Another operation waits on a queued execution: it may raise its priority, or bring a lender. */
  private joinedQueued(ex: Execution, op: Operation, priority: number): void {
    const q = this.queue;
    if (priority < ex.job.priority) {
      ex.job.priority = priority;
      const i = q.indexOf(ex);
      if (i >= 0) {
        q.splice(i, 1);
        this.insert(ex);
      }
    }
    const parent = op.submitter.parent;
    const list = parent ? this.lenders.get(parent) : undefined;
    const li = list?.findIndex((w) => this.takes(w.worker, ex.job)) ?? -1;
    if (list && li >= 0) {
      const lender = list.splice(li, 1)[0]!;
      const i = q.indexOf(ex);
      if (i >= 0) q.splice(i, 1);
      lender.give(this.start(ex, lender.worker));
    }
  }

  /** Lease an execution to a worker: it is EXECUTING from now on. */
  private start(ex: Execution, who: Worker, deadline = Number.POSITIVE_INFINITY): LeaseRecord {
    const worker = who.name;
    if (who.pool) ex.pool = who.pool;
    ex.stage = 'EXECUTING';
    ex.startedAt = new Date(this.clock.now());
    ex.attempts++;
    ex.worker = worker;
    ex.phase = undefined;
    const revoke = new AbortController();
    const lease: LeaseRecord = { id: randomUUID(), execution: ex, worker, deadline, revoke, signal: AbortSignal.any([ex.abort.signal, revoke.signal]) };
    ex.lease = lease;
    this.leases.set(lease.id, lease);
    this.saveAll(ex);
    this.emitAll(ex);
    this.emit('lease', lease);
    return lease;
  }

  private saveAll(ex: Execution): void {
    for (const op of ex.operations) this.journal?.save(op);
  }

  private emitAll(ex: Execution): void {
    this.emit('execution', ex);
    for (const op of ex.operations) this.emit('change', op);
  }

  private wait(list: Waiter[], worker: Worker, signal?: AbortSignal): Promise<LeaseRecord> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(new Error('worker stopped'));
      const waiter: Waiter = {
        worker,
        give: (lease) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(lease);
        },
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

  /** The first queued execution `worker` can run, taken off the queue. */
  private takeFor(worker: Worker, eligible: (ex: Execution) => boolean = () => true): Execution | undefined {
    const i = this.queue.findIndex((ex) => eligible(ex) && this.takes(worker, ex.job));
    return i >= 0 ? this.queue.splice(i, 1)[0] : undefined;
  }

  /**
   * `worker` takes the next execution it can run as a lease, waiting until there is one
   * (`signal` stops waiting). `deadline` (ms since the epoch): when the lease is lost unless
   * renewed; local slots hold theirs until they report.
   */
  lease(worker: Worker, signal?: AbortSignal, deadline?: number): Promise<Lease> {
    if (this.closed) return Promise.reject(new Error('the scheduler is closed'));
    const ex = this.takeFor(worker);
    if (ex) return Promise.resolve(this.start(ex, worker, deadline));
    return this.wait(this.waiting, worker, signal).then((l) => {
      if (deadline !== undefined) l.deadline = deadline;
      return l;
    });
  }

  /** A queued execution `worker` can run, leased at once, or undefined (a bot's poll that found nothing). */
  tryLease(worker: Worker, deadline?: number): Lease | undefined {
    if (this.closed) return undefined;
    const ex = this.takeFor(worker);
    return ex ? this.start(ex, worker, deadline) : undefined;
  }

  /** A worker of local pool `pool` takes the next execution, waiting until there is one. */
  async next(pool: string, signal?: AbortSignal): Promise<Execution> {
    const spec = this.pools.find((p) => p.name === pool);
    if (!spec) throw new Error(`unknown pool ${pool}`);
    return (await this.lease(this.localWorker(spec), signal)).execution;
  }

  /**
   * The slot lent by running execution `lender` takes the next execution one of its nested
   * operations waits on (that `worker` can run), waiting until there is one. `signal` ends the loan.
   */
  nestedLease(lender: string, worker: Worker, signal: AbortSignal): Promise<Lease> {
    const ex = this.takeFor(worker, (e) => [...e.operations].some((op) => op.submitter.parent === lender));
    if (ex) return Promise.resolve(this.start(ex, worker));
    let list = this.lenders.get(lender);
    if (!list) this.lenders.set(lender, (list = []));
    const waiting = this.wait(list, worker, signal);
    const forget = (): void => {
      if (list.length === 0 && this.lenders.get(lender) === list) this.lenders.delete(lender);
    };
    waiting.then(forget, forget);
    return waiting;
  }

  /** nestedLease() for a slot that can run anything a local pool can. */
  async nextNested(lender: string, signal: AbortSignal): Promise<Execution> {
    const worker: Worker = { name: 'nested', accepts: (job) => this.pools.some((p) => this.poolFits(p, job.platform)) };
    return (await this.nestedLease(lender, worker, signal)).execution;
  }

  /** The lease `id` while it is current (not completed, failed or expired). */
  leaseById(id: string): Lease | undefined {
    return this.leases.get(id);
  }

  /** Leases held now. */
  heldLeases(): Lease[] {
    return [...this.leases.values()];
  }

  /**
   * The holder of lease `id` reports its result. Returns false for a lease that is no longer
   * current (it expired and runs elsewhere, or the execution ended): the report is ignored.
   */
  completeLease(id: string, response: re.IExecuteResponse): boolean {
    const lease = this.leases.get(id);
    if (!lease) return false;
    this.leases.delete(id);
    this.complete(lease.execution, response);
    return true;
  }

  /** The holder of lease `id` is still at it: the lease lasts until `deadline`. */
  renew(id: string, deadline: number): boolean {
    const lease = this.leases.get(id);
    if (!lease) return false;
    lease.deadline = deadline;
    return true;
  }

  /**
   * Lease `id` is lost (its worker went away, or gave it back): the execution runs again on
   * another worker, unless it was cancelled (it ends CANCELLED) or has been leased maxAttempts
   * times (it ends UNAVAILABLE, saying why).
   */
  fail(id: string, reason: string): void {
    const lease = this.leases.get(id);
    if (!lease) return;
    this.leases.delete(id);
    lease.revoke.abort();
    const ex = lease.execution;
    ex.lease = undefined;
    if (ex.stage === 'COMPLETED') return;
    // Shutting down: the journal keeps it unfinished, it runs again after the restart.
    if (this.closed) return;
    if (ex.abort.signal.aborted) {
      this.complete(ex, { status: { code: Code.CANCELLED, message: `the operation was cancelled while running (${reason})` } });
      return;
    }
    if (ex.attempts >= this.maxAttempts) {
      const message = `the action was given to a worker ${ex.attempts} times and none finished it: ${reason}; not retried again`;
      this.complete(ex, { status: { code: Code.UNAVAILABLE, message }, message });
      return;
    }
    ex.stage = 'QUEUED';
    ex.worker = undefined;
    ex.phase = undefined;
    this.emit('requeued', ex, reason);
    this.enqueue(ex);
  }

  /** Lease `id` goes back to the queue unrun (its worker never got it): the attempt does not count. */
  release(id: string): void {
    const lease = this.leases.get(id);
    if (!lease) return;
    lease.execution.attempts = Math.max(0, lease.execution.attempts - 1);
    this.fail(id, `worker ${lease.worker} did not take the lease`);
  }

  /** Leases past their deadline are lost (see fail()). */
  expireLeases(now = this.clock.now()): void {
    for (const lease of [...this.leases.values()]) {
      if (lease.deadline < now) this.fail(lease.id, `worker ${lease.worker} stopped reporting on it`);
    }
  }

  /** Finish an execution with its ExecuteResponse: every operation still waiting on it is done. */
  complete(ex: Execution, response: re.IExecuteResponse): void {
    if (ex.stage === 'COMPLETED') return;
    if (ex.lease) this.leases.delete(ex.lease.id);
    ex.lease = undefined;
    ex.stage = 'COMPLETED';
    ex.completedAt = new Date(this.clock.now());
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

  /** Queued executions, in the order they will run. */
  queued(): Execution[] {
    return [...this.queue];
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
      const i = this.queue.indexOf(ex);
      if (i >= 0) this.queue.splice(i, 1);
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
    const out: Record<string, number> = Object.fromEntries(this.pools.map((p) => [p.name, 0]));
    for (const ex of this.queue) out[ex.pool] = (out[ex.pool] ?? 0) + 1;
    return out;
  }

  private sweep(): void {
    const cutoff = this.clock.now() - this.retentionMs;
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
