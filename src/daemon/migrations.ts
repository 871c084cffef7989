import type { MigrationContext } from './data-dir-format.js';

/**
 * One step of the data dir's format, from `from` to `from + 1`.
 *
 * Crash safety is the step's contract: the process can die (SIGKILL, power cut) at any point
 * in `run`, and the next start runs the step again with `ctx.resumeFrom` = the state of the last
 * `ctx.checkpoint`. So: commit LMDB writes through `checkpoint(state, writes)` (they commit
 * with the state, atomically), and make file-system work idempotent (a rename done before the
 * crash is found done after it). The version moves to `from + 1` only once `run` resolves.
 */
export interface Migration {
  from: number;
  /** What it changes, for the log ("action cache keys gain the instance name"). */
  description: string;
  run(ctx: MigrationContext): Promise<void>;
  /** Only for tests: the format it writes is not one any release reads. */
  testOnly?: true;
}

/**
 * Every migration, oldest first. Add one with each FORMAT_VERSION bump (data-dir-format.ts).
 * None yet: format 1 is the first recorded format.
 */
export const MIGRATIONS: readonly Migration[] = [];

/**
 * A real migration that no release needs: tests turn it on (REEXEC_TEST_EXTRA_MIGRATION=1) to
 * run an upgrade, an interrupted upgrade and a refusal of a newer format against real data
 * dirs, through the same code as any future migration. It goes one format past the newest and
 * writes, for every action cache entry, a marker in the database `test-migration-markers`,
 * two entries per checkpoint, with a pause point after the first checkpoint.
 */
export function testOnlyMigration(from: number): Migration {
  return {
    from,
    description: 'test-only: mark every action cache entry (REEXEC_TEST_EXTRA_MIGRATION)',
    testOnly: true,
    async run(ctx) {
      const ac = ctx.env.binary('action-cache');
      const markers = ctx.env.records<{ migratedAt: number }>('test-migration-markers');
      // Keys as LMDB gives them back (the encoding turns "\u0000" into an array separator),
      // in key order, which nothing changes while the migration runs: an index resumes exactly.
      const keys = [...ac.getKeys({})];
      const resume = ctx.resumeFrom as { done: number; batches: number } | undefined;
      let done = resume?.done ?? 0;
      let batches = resume?.batches ?? 0;
      if (resume) ctx.log.info(`test migration: resuming after ${batches} batches, ${keys.length - done} of ${keys.length} entries left`, { phase: 'migration' });
      while (done < keys.length) {
        const batch = keys.slice(done, done + 2);
        ctx.checkpoint({ done: done + batch.length, batches: batches + 1 }, () => {
          for (const k of batch) markers.putSync(k as string, { migratedAt: batches + 1 });
        });
        done += batch.length;
        batches++;
        ctx.progress(done, keys.length);
        if (batches === 1) await ctx.pause('after-first-batch');
      }
    },
  };
}
