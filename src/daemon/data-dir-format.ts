import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Database } from 'lmdb';
import { LmdbEnv } from '../store/lmdb-env.js';
import type { Logger } from '../util/logger.js';
import { pausePoint } from '../util/test-hooks.js';
import { MIGRATIONS, testOnlyMigration, type Migration } from './migrations.js';
import { VERSION } from './version.js';
import { UserError } from '../util/user-error.js';

/**
 * The on-disk format of a data dir (the LMDB databases' names, keys and values, the blob file
 * layout, whatever else the daemon reads back after a restart).
 *
 * BUMP THIS when a change makes the data dir read differently, and add the migration from the
 * previous version to MIGRATIONS in ./migrations.ts: a newer reexec then upgrades older data
 * dirs in place, and an older one refuses the newer format instead of misreading it.
 * 1: the format of every data dir written before formats were recorded.
 */
export const FORMAT_VERSION = 1;

/**
 * The record, in the LMDB database `data-dir` under the key `format`. In LMDB (not a file
 * beside it) so that a migration step's last writes and the version bump can commit in one
 * transaction, and a migration's checkpoints with the writes they cover: a crash leaves either
 * the old state or the new one, never a version that disagrees with the data.
 */
export interface FormatRecord {
  version: number;
  /** The reexec that last wrote this record ("0.1.0"). */
  by: string;
  /** A migration in progress (a crash interrupted it): where it goes and how far it got. */
  migration?: { to: number; startedAt: string; checkpoint?: unknown };
}

const FORMAT_KEY = 'format';

/** The data dir's format is newer than this reexec reads. */
export class DataDirFormatError extends UserError {
  constructor(
    readonly dataDir: string,
    readonly found: number,
    readonly supported: number,
    readonly writtenBy: string | undefined,
  ) {
    super(
      `the data dir ${dataDir} has format ${found}${writtenBy ? ` (written by reexec ${writtenBy})` : ''}, newer than this reexec ${VERSION} reads (format ${supported} at most)`,
    );
    this.name = 'DataDirFormatError';
  }

  override readonly suggestion = 'Run the newer reexec on it (data dirs are upgraded, never downgraded), or start this one with --data-dir pointing at another directory.';
}

/** What a migration step gets to work with. */
export interface MigrationContext {
  env: LmdbEnv;
  dataDir: string;
  log: Logger;
  /** What the last checkpoint of an interrupted run of this step saved; undefined on a first run. */
  resumeFrom: unknown;
  /**
   * Commit `writes` (LMDB puts and removes, synchronous) together with `state`, in one
   * transaction: after a crash the step is run again with resumeFrom = the last state committed.
   */
  checkpoint(state: unknown, writes?: () => void): void;
  /** Report progress (logged at most every few seconds). */
  progress(done: number, total?: number): void;
  /** A pause point for tests (see util/test-hooks.ts), named `migration-<to>-<name>`. */
  pause(name: string): Promise<void>;
}

function formatDb(env: LmdbEnv): Database<FormatRecord, string> {
  return env.records<FormatRecord>('data-dir');
}

/** The format recorded in an open store; undefined for a store written before formats were recorded. */
export function readFormat(env: LmdbEnv): FormatRecord | undefined {
  return formatDb(env).get(FORMAT_KEY);
}

/**
 * Open the data dir's LMDB environment at the format this reexec reads: a new store is
 * stamped with it, an older one is migrated in place (resuming a migration a crash
 * interrupted), a newer one is refused (DataDirFormatError) before anything in it is touched.
 * Call before any store opens its databases.
 */
export async function openDataDir(
  dataDir: string,
  log: Logger,
  migrations: readonly Migration[] = activeMigrations(),
  envOptions: Parameters<typeof LmdbEnv.open>[1] = {},
): Promise<LmdbEnv> {
  const fresh = !existsSync(join(dataDir, 'lmdb', 'data.mdb'));
  const env = LmdbEnv.open(dataDir, envOptions);
  try {
    await upgrade(env, dataDir, fresh, log, migrations);
    return env;
  } catch (err) {
    await env.close().catch(() => undefined);
    throw err;
  }
}

/** The migrations this process applies: MIGRATIONS, and the test-only one when a test asks for it. */
export function activeMigrations(env: NodeJS.ProcessEnv = process.env): Migration[] {
  const all = [...MIGRATIONS];
  if (env.REEXEC_TEST_EXTRA_MIGRATION === '1') all.push(testOnlyMigration(targetFormat(all)));
  return all;
}

/** The format a reexec with these migrations reads and writes. */
export function targetFormat(migrations: readonly Migration[]): number {
  return Math.max(FORMAT_VERSION, ...migrations.map((m) => m.from + 1));
}

async function upgrade(env: LmdbEnv, dataDir: string, fresh: boolean, log: Logger, migrations: readonly Migration[]): Promise<void> {
  const db = formatDb(env);
  const target = targetFormat(migrations);
  // A test-only format is marked as such, so that a refusal names it for what it is.
  const by = migrations.some((m) => m.testOnly) ? `${VERSION}+test-migration` : VERSION;
  let rec = db.get(FORMAT_KEY);
  if (!rec) {
    // No record: a new store, or one written before formats were recorded (format 1).
    rec = { version: fresh ? target : 1, by };
    db.putSync(FORMAT_KEY, rec);
    if (!fresh) log.info(`data dir ${dataDir}: no format recorded (written before reexec recorded one): format 1`);
  }
  const newest = Math.max(rec.version, rec.migration?.to ?? 0);
  if (newest > target) throw new DataDirFormatError(dataDir, newest, target, rec.by);

  while (rec.version < target) {
    const from: number = rec.version;
    const step = migrations.find((m) => m.from === from);
    if (!step) throw new Error(`no migration of data dirs from format ${from} to ${from + 1} (a bug: every format bump needs one in src/daemon/migrations.ts)`);
    const to = from + 1;
    const resuming = rec.migration?.to === to;
    const started = Date.now();
    if (!resuming) {
      rec = { version: from, by, migration: { to, startedAt: new Date().toISOString() } };
      db.putSync(FORMAT_KEY, rec);
    }
    log.info(`data dir ${dataDir}: ${resuming ? 'resuming the interrupted' : 'upgrading with the'} migration from format ${from} to ${to}: ${step.description}`, { phase: 'migration', from, to });
    let current: FormatRecord = rec;
    let lastReport = Date.now();
    const ctx: MigrationContext = {
      env,
      dataDir,
      log,
      resumeFrom: resuming ? rec.migration?.checkpoint : undefined,
      checkpoint(state, writes) {
        const next: FormatRecord = { ...current, migration: { ...current.migration!, checkpoint: state } };
        env.root.transactionSync(() => {
          writes?.();
          db.putSync(FORMAT_KEY, next);
        });
        current = next;
      },
      progress(done, total) {
        if (Date.now() - lastReport < 5000) return;
        lastReport = Date.now();
        log.info(`data dir migration to format ${to}: ${done}${total !== undefined ? ` of ${total}` : ''} done`, { phase: 'migration', done, ...(total !== undefined ? { total } : {}) });
      },
      pause: (name) => pausePoint(`migration-${to}-${name}`, log),
    };
    await step.run(ctx);
    rec = { version: to, by };
    db.putSync(FORMAT_KEY, rec);
    log.info(`data dir ${dataDir}: now format ${to} (${((Date.now() - started) / 1000).toFixed(1)} s)`, { phase: 'migration', to });
  }
  if (rec.by !== by && rec.version === target) {
    // Note which reexec uses it now, so a refusal by an older one can name the version to run.
    db.putSync(FORMAT_KEY, { ...rec, by });
  }
}
