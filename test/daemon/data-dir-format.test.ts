import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/reapi-client.js';
import { lockHolder } from '../../src/daemon/data-dir-lock.js';
import { activeMigrations, DataDirFormatError, FORMAT_VERSION, openDataDir, readFormat, type FormatRecord } from '../../src/daemon/data-dir-format.js';
import type { Migration } from '../../src/daemon/migrations.js';
import { VERSION } from '../../src/daemon/version.js';
import { LmdbEnv } from '../../src/store/lmdb-env.js';
import { silentLogger } from '../../src/util/logger.js';
import { REEXEC_BIN, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { call, digestOf, expectGrpcError } from '../helpers/storage.js';

const dirs: string[] = [];
const tempDir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'reexec-format-'));
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) {
    // A detached daemon a failed test left behind.
    const pid = lockHolder(d)?.pid;
    if (pid && pid !== process.pid) process.kill(pid, 'SIGKILL');
    rmSync(d, { recursive: true, force: true });
  }
});

/** Open the store of a stopped daemon as it is on disk, read something, close it. */
async function inspect<T>(dataDir: string, read: (env: LmdbEnv) => T): Promise<T> {
  const env = LmdbEnv.open(dataDir);
  try {
    return read(env);
  } finally {
    await env.close();
  }
}

describe('data dir format (in process)', () => {
  it('stamps a new data dir with the current format, and refuses a newer one before touching anything', async () => {
    const dataDir = tempDir();
    const env = await openDataDir(dataDir, silentLogger, []);
    expect(readFormat(env)).toEqual({ version: FORMAT_VERSION, by: VERSION });
    await env.close();

    // Written by a future reexec: refused, naming both formats and the version that wrote it.
    const future = tempDir();
    await inspect(future, (e) => e.records<FormatRecord>('data-dir').putSync('format', { version: FORMAT_VERSION + 3, by: '9.9.9' }));
    const err = await openDataDir(future, silentLogger, []).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataDirFormatError);
    expect((err as Error).message).toBe(`the data dir ${future} has format ${FORMAT_VERSION + 3} (written by reexec 9.9.9), newer than this reexec ${VERSION} reads (format ${FORMAT_VERSION} at most)`);
    // Nothing of the store was created in it.
    expect(existsSync(join(future, 'blobs'))).toBe(false);
    await inspect(future, (e) => expect([...e.root.getKeys({})].map(String).sort()).toEqual(['data-dir']));
  });

  it('treats a store without a record as format 1, and resumes a step that failed halfway from its last checkpoint', async () => {
    const dataDir = tempDir();
    // A store written before formats were recorded: data, no record.
    await inspect(dataDir, (e) => {
      for (let i = 0; i < 5; i++) e.binary('things').putSync(`k${i}`, Buffer.from(`v${i}`));
    });
    const runs: unknown[] = [];
    let failAfter: number | undefined = 3;
    const step: Migration = {
      from: FORMAT_VERSION,
      description: 'upper-case every thing',
      async run(ctx) {
        runs.push(ctx.resumeFrom);
        const db = ctx.env.binary('things');
        const keys = [...db.getKeys({})].map(String).sort();
        let from = (ctx.resumeFrom as number | undefined) ?? 0;
        for (; from < keys.length; from++) {
          if (failAfter !== undefined && from === failAfter) throw new Error('the disk went away');
          const k = keys[from]!;
          ctx.checkpoint(from + 1, () => db.putSync(k, Buffer.from(db.get(k)!.toString().toUpperCase())));
        }
      },
    };
    const first = await openDataDir(dataDir, silentLogger, [step]).catch((e: Error) => e);
    expect((first as Error).message).toBe('the disk went away');
    const halfway = await inspect(dataDir, (e) => readFormat(e));
    expect(halfway).toMatchObject({ version: FORMAT_VERSION, migration: { to: FORMAT_VERSION + 1, checkpoint: 3 } });

    failAfter = undefined;
    const env = await openDataDir(dataDir, silentLogger, [step]);
    expect(readFormat(env)).toEqual({ version: FORMAT_VERSION + 1, by: VERSION });
    expect([...env.binary('things').getRange({})].map(({ value }) => value.toString())).toEqual(['V0', 'V1', 'V2', 'V3', 'V4']);
    await env.close();
    // The second run started where the first stopped (nothing was upper-cased twice: it would not show, the checkpoint does).
    expect(runs).toEqual([undefined, 3]);
  });

  it('registers the test-only migration only when a test asks for it', () => {
    expect(activeMigrations({})).toEqual([]);
    expect(activeMigrations({ REEXEC_TEST_EXTRA_MIGRATION: '1' })).toMatchObject([{ from: FORMAT_VERSION, testOnly: true }]);
  });
});

/** `reexec start` as a process, until a log line matches `until` (or it exits). */
async function runUntil(args: string[], env: NodeJS.ProcessEnv, until: (entry: Record<string, unknown>) => boolean) {
  const child = spawn(process.execPath, [REEXEC_BIN, 'start', '--log-format', 'json', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const matched = await new Promise<boolean>((resolve) => {
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => {
      out += c.toString();
      for (const line of out.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          if (until(JSON.parse(line) as Record<string, unknown>)) resolve(true);
        } catch {
          /* a partial line */
        }
      }
    });
    void exited.then(() => resolve(false));
    // Not a timing assumption: a guard so that a daemon that never gets there fails the test with its log.
    setTimeout(() => resolve(false), 45_000).unref();
  });
  return { child, matched, exited, output: () => out };
}

describe('upgrading a data dir written by the current format (separate processes, SIGKILL mid-migration)', () => {
  const daemons: DaemonProcess[] = [];
  afterAll(async () => {
    for (const d of daemons) await d.kill();
  });

  it('upgrades in place, resumes after a SIGKILL, serves the same data after; an older reexec then refuses the newer format', async () => {
    const dataDir = tempDir();
    const common = ['--data-dir', dataDir, '--listen', '127.0.0.1:0'];
    const base = { REEXEC_TEST_EXTRA_MIGRATION: '', REEXEC_TEST_PAUSE_AT: '' };

    // 1. Today's daemon writes a data dir: five action results and their blobs.
    const first = await startDaemonProcess({ dataDir, env: base });
    daemons.push(first);
    let clients = connect(first.address);
    const actions: Array<{ hash: string; sizeBytes: number }> = [];
    for (let i = 0; i < 5; i++) {
      const stdout = Buffer.from(`stdout of action ${i}\n`);
      await call(clients.cas, 'BatchUpdateBlobs', { requests: [{ digest: digestOf(stdout), data: stdout }] });
      const action = digestOf(Buffer.from(`format test action ${i}`));
      await call(clients.actionCache, 'UpdateActionResult', { actionDigest: action, actionResult: { exitCode: 0, stdoutDigest: digestOf(stdout) } });
      actions.push(action);
    }
    clients.close();
    expect((await first.stop()).code).toBe(0);
    // As a data dir written before formats were recorded: the same databases, no record.
    await inspect(dataDir, (e) => {
      expect(readFormat(e)).toEqual({ version: FORMAT_VERSION, by: VERSION });
      e.records('data-dir').removeSync('format');
    });

    // 2. Today's reexec reads it as format 1 and records that.
    const again = await startDaemonProcess({ dataDir, env: base });
    daemons.push(again);
    expect(again.output()).toContain('no format recorded (written before reexec recorded one): format 1');
    expect((await again.stop()).code).toBe(0);

    // 3. A newer reexec (one more format, through the test-only migration) upgrades it, and is
    //    killed at the pause point after its first checkpoint.
    const newer = { REEXEC_TEST_EXTRA_MIGRATION: '1' };
    const to = FORMAT_VERSION + 1;
    const crashed = await runUntil(common, { ...newer, REEXEC_TEST_PAUSE_AT: `migration-${to}-after-first-batch` }, (e) => e['pausePoint'] === `migration-${to}-after-first-batch`);
    expect(crashed.matched, crashed.output()).toBe(true);
    expect(crashed.output()).toContain(`upgrading with the migration from format ${FORMAT_VERSION} to ${to}`);
    crashed.child.kill('SIGKILL');
    expect((await crashed.exited).signal).toBe('SIGKILL');
    const halfway = await inspect(dataDir, (e) => ({ format: readFormat(e), markers: [...e.records<{ migratedAt: number }>('test-migration-markers').getRange({})].length }));
    expect(halfway.format).toMatchObject({ version: FORMAT_VERSION, migration: { to, checkpoint: { batches: 1 } } });
    expect(halfway.markers).toBe(2);

    // 4. Started again (detached, as a user upgrading would), it resumes where it was killed,
    //    says so, finishes, and serves what was there.
    const resumed = await execa(process.execPath, [REEXEC_BIN, 'start', '--detach', ...common], { reject: false, env: { ...base, ...newer } });
    expect(resumed.exitCode, resumed.stderr).toBe(0);
    expect(resumed.stdout).toContain(`resuming the interrupted migration from format ${FORMAT_VERSION} to ${to}`);
    expect(resumed.stdout).toContain('test migration: resuming after 1 batches, 3 of 5 entries left');
    expect(resumed.stdout).toContain(`now format ${to}`);
    const address = /reexec running \(pid \d+\) on (\S+);/.exec(resumed.stdout)![1]!;
    clients = connect(address);
    for (const [i, action] of actions.entries()) {
      const result: any = await call(clients.actionCache, 'GetActionResult', { actionDigest: action });
      expect(result.stdoutDigest.hash).toBe(digestOf(Buffer.from(`stdout of action ${i}\n`)).hash);
    }
    await expectGrpcError(call(clients.actionCache, 'GetActionResult', { actionDigest: digestOf(Buffer.from('never stored')) }), 5);
    clients.close();
    const stopped = await execa(process.execPath, [REEXEC_BIN, 'stop', '--data-dir', dataDir], { reject: false, env: base });
    expect(stopped.exitCode, stopped.stderr).toBe(0);
    const done = await inspect(dataDir, (e) => ({ format: readFormat(e), markers: [...e.records<{ migratedAt: number }>('test-migration-markers').getRange({})].map((r) => r.value.migratedAt) }));
    expect(done.format).toEqual({ version: to, by: `${VERSION}+test-migration` });
    // Batches 1 (before the kill), then 2 and 3: the first batch was not done again.
    expect(done.markers).toEqual([1, 1, 2, 2, 3]);

    // 5. Today's reexec is now the older one: the daemon and an offline gc both refuse, naming both formats.
    const refusal = `the data dir ${dataDir} has format ${to} (written by reexec ${VERSION}+test-migration), newer than this reexec ${VERSION} reads (format ${FORMAT_VERSION} at most)`;
    const older = await execa(process.execPath, [REEXEC_BIN, 'start', ...common], { reject: false, env: base });
    expect(older.exitCode).toBe(2);
    expect(older.stderr).toContain(`Error: ${refusal}`);
    expect(older.stderr).toContain('Run the newer reexec on it (data dirs are upgraded, never downgraded)');
    const gc = await execa(process.execPath, [REEXEC_BIN, 'gc', '--data-dir', dataDir, '--dry-run', '--json'], { reject: false, env: base });
    expect(gc.exitCode).toBe(2);
    expect(JSON.parse(gc.stdout)).toMatchObject({ error: { message: refusal } });
  });
});
