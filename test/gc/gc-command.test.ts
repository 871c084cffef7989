import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/reapi-client.js';
import { Digest } from '../../src/digest/digest.js';
import { freePort, REEXEC_BIN as BIN, REPO_ROOT, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { bytes, call, digestOf } from '../helpers/storage.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function distIsStale(): boolean {
  const built = join(REPO_ROOT, 'dist', 'commands', 'gc.js');
  if (!existsSync(built)) return true;
  const builtAt = statSync(built).mtimeMs;
  return ['src/commands/gc.ts', 'src/gc/storage-gc.ts', 'src/gc/garbage-collector.ts', 'src/gc/offline-gc.ts', 'src/gc/remote-gc.ts', 'src/gc/gc-report.ts', 'src/cas/lmdb-blob-store.ts'].some(
    (s) => statSync(join(REPO_ROOT, s)).mtimeMs > builtAt,
  );
}

/**
 * `reexec gc` run as users run it (bin/run.js from dist/), against a daemon found through the
 * config, against --endpoint, and on a data dir with no daemon.
 */
describe('reexec gc', () => {
  let tmp: string;
  let dataDir: string;
  let configFile: string;
  let port: number;
  let daemon: DaemonProcess | undefined;

  const gc = (...args: string[]) => execa(process.execPath, [BIN, 'gc', ...args], { cwd: REPO_ROOT, reject: false, env: { ...process.env, XDG_CONFIG_HOME: join(tmp, 'xdg') } });
  const start = async () => (daemon = await startDaemonProcess({ dataDir, listen: [`127.0.0.1:${port}`], args: ['--config', configFile] }));
  /** Upload `n` blobs (mixed: inline and files); resolves to their digests. */
  const fill = async (n: number, seed: number): Promise<Digest[]> => {
    const clients = connect(`127.0.0.1:${port}`);
    try {
      const blobs = Array.from({ length: n }, (_, i) => bytes(i % 2 ? 2_000 : 100_000, seed + i));
      const res: any = await call(clients.cas, 'BatchUpdateBlobs', { requests: blobs.map((b) => ({ digest: digestOf(b), data: b })) });
      expect(res.responses.every((r: any) => !r.status?.code)).toBe(true);
      return blobs.map((b) => Digest.compute(b));
    } finally {
      clients.close();
    }
  };
  const missingCount = async (digests: Digest[]): Promise<number> => {
    const clients = connect(`127.0.0.1:${port}`);
    try {
      const res: any = await call(clients.cas, 'FindMissingBlobs', { blobDigests: digests.map((d) => d.toProto()) });
      return res.missingBlobDigests.length;
    } finally {
      clients.close();
    }
  };

  beforeAll(async () => {
    if (distIsStale()) {
      const build = await execa('npm', ['run', 'build'], { cwd: REPO_ROOT, reject: false, all: true });
      if (distIsStale()) throw new Error(`npm run build failed to refresh dist/:\n${build.all}`);
    }
    tmp = mkdtempSync(join(tmpdir(), 'reexec-gc-cli-'));
    dataDir = join(tmp, 'data');
    port = await freePort();
    configFile = join(tmp, 'config.yaml');
    writeFileSync(
      configFile,
      [
        `listen: 127.0.0.1:${port}`,
        `data-dir: ${dataDir}`,
        'storage:',
        '  fsync: false',
        '  max-bytes: 64MiB',
        '  grace-period: 0',
        'metrics:',
        '  listen: off',
        'execution:',
        '  enabled: false',
        '',
      ].join('\n'),
    );
  }, 180_000);
  afterAll(async () => {
    await daemon?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('asks the daemon named by the config: --dry-run evicts nothing, then --target 0 evicts everything evictable', async () => {
    await start();
    const digests = await fill(10, 1);
    await sleep(1100); // older than the (zero) grace period, to the second

    const dry = await gc('--config', configFile, '--dry-run', '--target', '0', '--json');
    expect(dry.exitCode, dry.stderr).toBe(0);
    const drySummary = JSON.parse(dry.stdout);
    expect(drySummary).toMatchObject({ via: 'daemon', dryRun: true, freedBlobs: 10, after: { count: 0, bytes: 0 } });
    expect(await missingCount(digests)).toBe(0);

    const real = await gc('--config', configFile, '--target', '0');
    expect(real.exitCode, real.stderr).toBe(0);
    expect(real.stdout).toContain(`reexec daemon at grpc://127.0.0.1:${port}`);
    expect(real.stdout).toMatch(/^Freed 10 blob\(s\), 498 KiB, in \d/m);
    expect(real.stdout).toMatch(/CAS: .* in 10 blobs → 0 B in 0 blobs/);
    expect(await missingCount(digests)).toBe(10);
  });

  it('takes --endpoint and --keep-days; refuses --data-dir while the daemon holds it', async () => {
    const digests = await fill(4, 100);
    const kept = await gc('--endpoint', `grpc://127.0.0.1:${port}`, '--keep-days', '1', '--json');
    expect(kept.exitCode, kept.stderr).toBe(0);
    // Nothing is a day old (and with --keep-days alone there is no size target): nothing goes.
    const keptSummary = JSON.parse(kept.stdout);
    expect(keptSummary).toMatchObject({ via: 'daemon', freedBlobs: 0, maxAgeSeconds: 86400 });
    expect(keptSummary.targetBytes).toBeUndefined();
    expect(await missingCount(digests)).toBe(0);

    const locked = await gc('--config', configFile, '--data-dir', dataDir);
    expect(locked.exitCode).toBe(2);
    expect(locked.stderr).toMatch(new RegExp(`a reexec daemon \\(pid ${daemon!.pid}\\) is using`));
    expect(locked.stderr).toMatch(/without --data-dir/);

    const nobody = await gc('--endpoint', 'grpc://127.0.0.1:1', '--json');
    expect(nobody.exitCode).toBe(2);
    expect(JSON.parse(nobody.stdout).error.message).toMatch(/no reexec daemon is answering at grpc:\/\/127\.0\.0\.1:1/);
  });

  it('draws a progress bar on a terminal', async () => {
    const run = await execa('script', ['-qec', `${process.execPath} ${BIN} gc --config ${configFile} --target 0`, '/dev/null'], {
      cwd: REPO_ROOT,
      reject: false,
      env: { ...process.env, XDG_CONFIG_HOME: join(tmp, 'xdg') },
    });
    expect(run.exitCode, run.stdout).toBe(0);
    expect(run.stdout).toMatch(/\[[#-]{30}\] +\d+%/);
    expect(run.stdout).toMatch(/Freed \d+ blob/);
  });

  it('opens the store itself when no daemon runs, and removes orphan files a crash left', async () => {
    const digests = await fill(6, 200);
    await daemon!.stop();
    daemon = undefined;
    const orphan = Digest.compute(bytes(70_000, 999));
    mkdirSync(join(dataDir, 'blobs', 'sha256', orphan.hash.slice(0, 2)), { recursive: true });
    writeFileSync(join(dataDir, 'blobs', 'sha256', orphan.hash.slice(0, 2), orphan.hash), bytes(70_000, 999));
    await sleep(1100);

    // Through the config: no daemon answers, so it collects in the data dir.
    const viaConfig = await gc('--config', configFile, '--target', '0', '--json');
    expect(viaConfig.exitCode, viaConfig.stderr).toBe(0);
    const s = JSON.parse(viaConfig.stdout);
    expect(s).toMatchObject({ via: 'data-dir', dataDir, freedBlobs: digests.length, after: { bytes: 0, count: 0 }, orphanFiles: { files: 1, bytes: 70_000 } });
    expect(existsSync(join(dataDir, 'blobs', 'sha256', orphan.hash.slice(0, 2), orphan.hash))).toBe(false);
    expect(existsSync(join(dataDir, 'daemon.lock'))).toBe(false);

    // And with --data-dir.
    const direct = await gc('--config', configFile, '--data-dir', dataDir, '--dry-run');
    expect(direct.exitCode, direct.stderr).toBe(0);
    expect(direct.stdout).toContain(`data dir ${dataDir} (no daemon running)`);
    expect(direct.stdout).toMatch(/Dry run: would free 0 blob/);

    // The daemon starts on the collected store, and counts right.
    await start();
    const status = await fill(2, 300);
    expect(await missingCount(status)).toBe(0);

    const none = await gc('--config', configFile, '--data-dir', join(tmp, 'nowhere'));
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toMatch(/there is no reexec store in/);
  });
});
