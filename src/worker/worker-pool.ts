import type { Executor } from '../execution/build-executor.js';
import type { Execution } from '../scheduler/operation.js';
import type { Lease, PoolSpec, Scheduler, Worker } from '../scheduler/scheduler.js';
import type { Logger } from '../util/logger.js';

/**
 * The local worker slots of every pool: workers of the scheduler like bots are. Each slot
 * takes leases, runs them through the executor and reports the response. A slot running an
 * action with a REAPI socket (remoteApisSocketPath) lends itself to that action's nested work
 * while it runs: the action waits on that work, so it would never finish if every other slot
 * were busy too (see Scheduler.nestedLease).
 */
export class WorkerPool {
  private readonly stop = new AbortController();
  private readonly loops: Promise<void>[] = [];
  /** Slot name → execution it runs, for the status view. Lent slots are named "SLOT/nested…". */
  readonly running = new Map<string, Execution>();

  constructor(
    private readonly scheduler: Scheduler,
    private readonly executor: Executor,
    private readonly log: Logger,
  ) {}

  start(pools: readonly PoolSpec[]): void {
    for (const pool of pools) {
      if (pool.unavailable) continue;
      const worker = this.scheduler.localWorker(pool);
      for (let i = 0; i < pool.slots; i++) this.loops.push(this.loop(worker, `${pool.name}-${i}`));
    }
  }

  private async loop(worker: Worker, slot: string): Promise<void> {
    while (!this.stop.signal.aborted) {
      let lease: Lease;
      try {
        lease = await this.scheduler.lease(worker, this.stop.signal);
      } catch {
        return;
      }
      await this.run(lease, slot, worker);
    }
  }

  /** Run one lease in `slot` (lending the slot to its nested work while it runs), and report it. */
  private async run(lease: Lease, slot: string, worker: Worker): Promise<void> {
    const ex = lease.execution;
    ex.worker = slot;
    this.running.set(slot, ex);
    const loan = new AbortController();
    const lending = ex.job.platform.remoteApisSocket ? this.lend(ex, `${slot}/nested`, worker, loan.signal) : Promise.resolve();
    try {
      const response = await this.executor.execute(ex, `reexec/${slot}`, lease.signal, (phase) => (ex.phase = phase));
      // A daemon shutting down leaves the operation as it was in the journal: it runs again after restart.
      if (!this.scheduler.isClosed) this.scheduler.completeLease(lease.id, response);
    } catch (err) {
      this.log.error('worker slot failed (a bug)', { slot, execution: ex.id, operations: ex.operationNames, error: (err as Error).stack });
      if (!this.scheduler.isClosed) this.scheduler.completeLease(lease.id, { status: { code: 13, message: `internal error running the action: ${(err as Error).message}` } });
    } finally {
      this.running.delete(slot);
      // What it Executed through its socket and still waits for has lost its client: cancelled
      // (the lent slot's current run ends with it), then the loan ends.
      if (ex.job.platform.remoteApisSocket && !this.scheduler.isClosed) this.scheduler.cancelNested(ex.id);
      loan.abort();
      await lending;
    }
  }

  /** The lent slot: runs `lender`'s nested work, one at a time, until the loan ends. */
  private async lend(lender: Execution, slot: string, worker: Worker, loan: AbortSignal): Promise<void> {
    const signal = AbortSignal.any([loan, this.stop.signal]);
    const nested: Worker = { name: slot, accepts: (job) => worker.accepts(job) || this.scheduler.pools.some((p) => this.scheduler.localWorker(p).accepts(job)) };
    while (!signal.aborted) {
      let lease: Lease;
      try {
        lease = await this.scheduler.nestedLease(lender.id, nested, signal);
      } catch {
        return;
      }
      await this.run(lease, slot, worker);
    }
  }

  async close(): Promise<void> {
    this.stop.abort();
    await Promise.allSettled(this.loops);
  }
}
