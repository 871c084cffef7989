import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/reapi-client.js';
import { LmdbBlobStore } from '../../src/cas/lmdb-blob-store.js';
import { Digest } from '../../src/digest/digest.js';
import { SHA256 } from '../../src/digest/digest-function.js';
import { LmdbEnv } from '../../src/store/lmdb-env.js';
import { freePort, REEXEC_BIN as BIN, startDaemonProcess as startProcess, type DaemonProcess, type DaemonProcessOptions } from '../helpers/daemon-process.js';
import { adminCollect } from '../helpers/gc.js';
import { call } from '../helpers/storage.js';
import { waitFor } from '../helpers/wait.js';

/** Every daemon started, killed at the end whatever happens. */
const started: DaemonProcess[] = [];
async function startDaemonProcess(opts: DaemonProcessOptions): Promise<DaemonProcess> {
  const d = await startProcess(opts);
  started.push(d);
  return d;
}

/** Small blobs (inline in LMDB) and some over 64 KiB (files), all distinct for `round`. */
function blobs(round: number, small: number, large: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < small; i++) out.push(Buffer.from(`round ${round} small blob ${i} `.padEnd(120, '*')));
  for (let i = 0; i < large; i++) out.push(Buffer.alloc(70_000 + i, `round ${round} large ${i} `));
  return out;
}

/**
 * Open the store as the daemon would after a crash and check it is consistent: the counters
 * match the index, every record has its bytes (file or inline) and they hash right; files
 * without a record are allowed (a crash between deleting a record and its file) and go with
 * removeOrphanFiles. Resolves to the number of blobs and of orphan files removed.
 */
async function checkConsistent(dataDir: string): Promise<{ blobs: number; orphanFiles: number }> {
  const env = LmdbEnv.open(dataDir);
  try {
    const store = new LmdbBlobStore(env, dataDir, { inlineMaxBytes: 64 * 1024, fsync: false, touchIntervalSeconds: 600, readChunkBytes: 1 << 20 });
    const all = store.scan(undefined, 10_000_000);
    expect(store.usage()).toEqual({ bytes: all.reduce((n, e) => n + e.s, 0), count: all.length });
    for (const e of all) {
      const hash = e.key.slice('sha256:'.length);
      const d = Digest.of(SHA256, hash, e.s);
      const data = await store.get(d);
      expect(data, `blob ${e.key} has a record but no bytes`).toBeDefined();
      expect(createHash('sha256').update(data!).digest('hex')).toBe(hash);
    }
    const orphans = await store.removeOrphanFiles();
    const blobsDir = join(dataDir, 'blobs', 'sha256');
    for (const prefix of existsSync(blobsDir) ? readdirSync(blobsDir) : []) {
      for (const name of readdirSync(join(blobsDir, prefix))) {
        const size = statSync(join(blobsDir, prefix, name)).size;
        expect(store.record(Digest.of(SHA256, name, size))?.f, `file ${name} without its record`).toBe(1);
      }
    }
    return { blobs: all.length, orphanFiles: orphans.files };
  } finally {
    await env.close();
  }
}

/**
 * SIGKILL in the middle of a collection, of the daemon or of `reexec gc` working on a data
 * dir: the store is consistent afterwards, and the daemon starts on it. The kill lands at a
 * pause point (REEXEC_TEST_PAUSE_AT=eviction, src/util/test-hooks.ts): after a deletion batch
 * has committed and before its files are removed, the worst moment, every time.
 */
describe('crash safety of garbage collection', () => {
  let tmp: string;
  let configFile: string;
  let dataDir: string;
  let pauseFile: string;
  let port: number;

  /** More blobs than the collector deletes before the pause holds it (four batches of 1,000 in flight). */
  const fill = async (address: string, round: number): Promise<number> => {
    const clients = connect(address);
    try {
      const all = blobs(round, 6000, 200);
      let batch: Buffer[] = [];
      let bytes = 0;
      const flush = async () => {
        const res: any = await call(clients.cas, 'BatchUpdateBlobs', { requests: batch.map((b) => ({ digest: Digest.compute(b).toProto(), data: b })) });
        expect(res.responses.every((r: any) => !r.status?.code)).toBe(true);
        batch = [];
        bytes = 0;
      };
      for (const b of all) {
        if (bytes + b.length > 3 * 1024 * 1024) await flush();
        batch.push(b);
        bytes += b.length;
      }
      await flush();
      return all.length;
    } finally {
      clients.close();
    }
  };
  const pauseEnv = () => ({ REEXEC_TEST_PAUSE_AT: 'eviction', REEXEC_TEST_PAUSE_FILE: pauseFile });
  /** Hold the next eviction at the pause point. */
  const armPause = () => {
    rmSync(`${pauseFile}.reached`, { force: true });
    writeFileSync(pauseFile, '');
  };

  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'reexec-gc-crash-'));
    dataDir = join(tmp, 'data');
    configFile = join(tmp, 'config.yaml');
    pauseFile = join(tmp, 'pause-eviction');
  });
  afterAll(async () => {
    for (const d of started) await d.kill();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('the daemon killed while evicting leaves a consistent store', async () => {
    port = await freePort();
    writeFileSync(configFile, `listen: 127.0.0.1:${port}\ndata-dir: ${dataDir}\nstorage: {fsync: false, max-bytes: 1GiB, grace-period: 0}\nmetrics: {listen: off}\nexecution: {enabled: false}\n`);
    const d = await startDaemonProcess({ dataDir, listen: [`127.0.0.1:${port}`], args: ['--config', configFile], env: pauseEnv() });
    const stored = await fill(d.address, 0);
    const before = (await checkConsistentRemote(d.address)).count;
    expect(before).toBeGreaterThanOrEqual(stored);
    armPause();
    const clients = connect(d.address);
    const collecting = adminCollect({ clients }, { targetBytes: 0 }).catch(() => undefined);
    await waitFor('the collection to reach the pause point', () => existsSync(`${pauseFile}.reached`));
    await d.kill();
    await collecting;
    clients.close();
    rmSync(pauseFile, { force: true });
    const left = await checkConsistent(dataDir);
    // Killed mid-collection: some blobs went, most did not, and the files of the last batch
    // outlived their records (orphans, removed by the check as by the next start).
    expect(left.blobs).toBeGreaterThan(0);
    expect(left.blobs).toBeLessThan(before);
    expect(left.orphanFiles).toBeGreaterThan(0);
    // The daemon starts on it and serves.
    const again = await startDaemonProcess({ dataDir, listen: [`127.0.0.1:${port}`], args: ['--config', configFile] });
    await fill(again.address, 100);
    await again.stop();
    await checkConsistent(dataDir);
  }, 300_000);

  it('`reexec gc --data-dir` killed while evicting leaves a consistent store', async () => {
    const d = await startDaemonProcess({ dataDir, listen: [`127.0.0.1:${port}`], args: ['--config', configFile] });
    await fill(d.address, 200);
    await d.stop();
    const before = (await checkConsistent(dataDir)).blobs;
    armPause();
    const run = execa(process.execPath, [BIN, 'gc', '--config', configFile, '--data-dir', dataDir, '--target', '0'], { reject: false, env: pauseEnv() });
    await waitFor('the collection to reach the pause point', () => existsSync(`${pauseFile}.reached`) || run.exitCode !== null);
    run.kill('SIGKILL');
    await run;
    rmSync(pauseFile, { force: true });
    const left = await checkConsistent(dataDir);
    expect(left.blobs).toBeGreaterThan(0);
    expect(left.blobs).toBeLessThan(before);
    expect(left.orphanFiles).toBeGreaterThan(0);
    // The lock the killed process left is taken over.
    expect(existsSync(join(dataDir, 'daemon.lock'))).toBe(true);
    const again = await startDaemonProcess({ dataDir, listen: [`127.0.0.1:${port}`], args: ['--config', configFile] });
    await again.stop();
  }, 300_000);
});

/** The blob count as the daemon's counters say (through a dry run). */
async function checkConsistentRemote(address: string): Promise<{ count: number }> {
  const clients = connect(address);
  try {
    const s = await adminCollect({ clients }, { targetBytes: 0, dryRun: true });
    return { count: s.before.count };
  } finally {
    clients.close();
  }
}
