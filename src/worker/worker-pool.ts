import type { Logger } from '../util/logger.js';
import type { Execution } from '../scheduler/operation.js';
import type { PoolSpec, Scheduler } from '../scheduler/scheduler.js';
import { executeAction, type ExecutorContext } from './action-executor.js';

/**
 * The worker slots of every pool. Each slot pulls executions from the scheduler, the way an
 * out-of-process worker would, runs them and reports the response. A slot running an action
 * with a REAPI socket (remoteApisSocketPath) lends itself to that action's nested work while
 * it runs: the action waits on that work, so it would never finish if every other slot were
 * busy too (see Scheduler.nextNested).
 */
export class WorkerPool {
  private readonly stop = new AbortController();
  private readonly loops: Promise<void>[] = [];
  /** Slot name → execution it runs, for the status view. Lent slots are named "SLOT/nested…". */
  readonly running = new Map<string, Execution>();

  constructor(
    private readonly scheduler: Scheduler,
    private readonly ctx: ExecutorContext,
    private readonly log: Logger,
  ) {}

  start(pools: readonly PoolSpec[]): void {
    for (const pool of pools) {
      if (pool.unavailable) continue;
      for (let i = 0; i < pool.slots; i++) this.loops.push(this.loop(pool, `${pool.name}-${i}`));
    }
  }

  private async loop(pool: PoolSpec, slot: string): Promise<void> {
    while (!this.stop.signal.aborted) {
      let ex: Execution;
      try {
        ex = await this.scheduler.next(pool.name, this.stop.signal);
      } catch {
        return;
      }
      await this.run(ex, slot);
    }
  }

  /** Run one execution in `slot` (lending the slot to its nested work while it runs), and report it. */
  private async run(ex: Execution, slot: string): Promise<void> {
    ex.worker = slot;
    this.running.set(slot, ex);
    const loan = new AbortController();
    const lending = ex.job.platform.remoteApisSocket ? this.lend(ex, `${slot}/nested`, loan.signal) : Promise.resolve();
    try {
      const response = await executeAction(this.ctx, ex, `reexec/${slot}`, ex.abort.signal, (phase) => (ex.phase = phase));
      // A daemon shutting down leaves the operation as it was in the journal: it runs again after restart.
      if (!this.scheduler.isClosed) this.scheduler.complete(ex, response);
    } catch (err) {
      this.log.error('worker slot failed (a bug)', { slot, execution: ex.id, operations: ex.operationNames, error: (err as Error).stack });
      if (!this.scheduler.isClosed) this.scheduler.complete(ex, { status: { code: 13, message: `internal error running the action: ${(err as Error).message}` } });
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
  private async lend(lender: Execution, slot: string, loan: AbortSignal): Promise<void> {
    const signal = AbortSignal.any([loan, this.stop.signal]);
    while (!signal.aborted) {
      let ex: Execution;
      try {
        ex = await this.scheduler.nextNested(lender.id, signal);
      } catch {
        return;
      }
      await this.run(ex, slot);
    }
  }

  async close(): Promise<void> {
    this.stop.abort();
    await Promise.allSettled(this.loops);
  }
}
