import type { Logger } from '../util/logger.js';
import type { Operation } from '../scheduler/operation.js';
import type { PoolSpec, Scheduler } from '../scheduler/scheduler.js';
import { executeAction, type ExecutorContext } from './action-executor.js';

/**
 * The worker slots of every pool. Each slot pulls operations from the scheduler, the way an
 * out-of-process worker would, runs them and reports the response.
 */
export class WorkerPool {
  private readonly stop = new AbortController();
  private readonly loops: Promise<void>[] = [];
  /** Slot name → operation it runs, for the status view. */
  readonly running = new Map<string, Operation>();

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
      let op: Operation;
      try {
        op = await this.scheduler.next(pool.name, this.stop.signal);
      } catch {
        return;
      }
      op.worker = slot;
      this.running.set(slot, op);
      try {
        const response = await executeAction(this.ctx, op.job, op.name, `reexec/${slot}`, op.queuedAt, op.abort.signal, (phase) => (op.phase = phase));
        // A daemon shutting down leaves the operation as it was in the journal: it runs again after restart.
        if (!this.scheduler.isClosed) this.scheduler.complete(op, response);
      } catch (err) {
        this.log.error('worker slot failed (a bug)', { slot, operation: op.name, error: (err as Error).stack });
        if (!this.scheduler.isClosed) this.scheduler.complete(op, { status: { code: 13, message: `internal error running the action: ${(err as Error).message}` } });
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
