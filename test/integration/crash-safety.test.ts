import type * as grpc from '@grpc/grpc-js';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait.js';
import { connect } from '../../src/client/reapi-client.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { blobName, bsRead, bsWrite, call, digestOf } from '../helpers/storage.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Upload {
  data: Buffer;
  via: 'batch' | 'bytestream';
  acked: boolean;
}

/**
 * Kill -9 in the middle of many concurrent uploads, restart on the same data dir: every upload
 * the server acknowledged is there, intact; every other blob is either absent or complete.
 * (Runs the built daemon: `npm run build` first.)
 */
describe('crash safety (separate daemon process, SIGKILL)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'reexec-crash-'));
  const daemons: DaemonProcess[] = [];
  afterAll(async () => {
    for (const p of daemons) await p.kill();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('keeps every acknowledged upload and exposes no partial blob after a SIGKILL mid-upload', async () => {
    const first = await startDaemonProcess({ dataDir });
    daemons.push(first);
    const clients = connect(first.address);
    const uploads: Upload[] = [];
    let killed = false;

    const sizes = {
      batch: [100, 3 * KiB, 40 * KiB, 64 * KiB + 1, 150 * KiB, 500 * KiB],
      bytestream: [2 * KiB, 60 * KiB, 65 * KiB, 300 * KiB, 1 * MiB + 7, 3 * MiB],
    };
    const batchWorker = async (w: number): Promise<void> => {
      for (let round = 0; !killed; round++) {
        const batch: Upload[] = sizes.batch.map((n, i) => ({ data: randomBytes(n + ((w + round + i) % 7)), via: 'batch', acked: false }));
        uploads.push(...batch);
        try {
          const res: any = await call(clients.cas, 'BatchUpdateBlobs', { requests: batch.map((u) => ({ digest: digestOf(u.data), data: u.data })) });
          res.responses.forEach((r: any, i: number) => {
            if ((r.status?.code ?? 0) === 0) batch[i]!.acked = true;
          });
        } catch {
          return; // the daemon is gone
        }
      }
    };
    const streamWorker = async (w: number): Promise<void> => {
      for (let round = 0; !killed; round++) {
        const n = sizes.bytestream[(w + round) % sizes.bytestream.length]!;
        const u: Upload = { data: randomBytes(n), via: 'bytestream', acked: false };
        uploads.push(u);
        try {
          const res = await bsWrite(clients.byteStream, u.data, { chunkBytes: 256 * KiB });
          if (res !== 'cancelled' && res.committedSize === n) u.acked = true;
        } catch {
          return;
        }
      }
    };
    const workers = [...[0, 1, 2].map(batchWorker), ...[0, 1, 2, 3].map(streamWorker)];
    // Let the uploads get going, then pull the plug while they are in full flight.
    await waitFor('150 acknowledged uploads of both kinds', () => {
      const done = uploads.filter((u) => u.acked);
      return done.length >= 150 && done.some((u) => u.via === 'batch') && done.some((u) => u.via === 'bytestream');
    });
    await first.kill();
    killed = true;
    await Promise.all(workers);
    clients.close();

    const acked = uploads.filter((u) => u.acked);
    const unacked = uploads.filter((u) => !u.acked);
    expect(acked.length).toBeGreaterThanOrEqual(150);
    expect(acked.some((u) => u.via === 'batch') && acked.some((u) => u.via === 'bytestream')).toBe(true);
    expect(unacked.length).toBeGreaterThan(0);

    const second = await startDaemonProcess({ dataDir });
    daemons.push(second);
    const c2 = connect(second.address);
    try {
      // Stale partial uploads are cleared at start-up.
      expect(readdirSync(join(dataDir, 'tmp'))).toEqual([]);

      const missing: any = await call(c2.cas, 'FindMissingBlobs', { blobDigests: acked.map((u) => digestOf(u.data)) });
      expect(missing.missingBlobDigests, 'acknowledged uploads lost').toEqual([]);

      let unackedPresent = 0;
      for (const u of uploads) {
        const d = digestOf(u.data);
        const read = await bsRead(c2.byteStream, blobName(d)).catch((e: grpc.ServiceError) => e);
        if (Buffer.isBuffer(read)) {
          expect(read.length, `${u.via} blob ${d.hash}/${d.sizeBytes}`).toBe(u.data.length);
          expect(read.equals(u.data), `${u.via} blob ${d.hash} corrupt`).toBe(true);
          if (!u.acked) unackedPresent++;
        } else {
          expect(u.acked, `acknowledged ${u.via} blob ${d.hash}/${d.sizeBytes} unreadable: ${read.details}`).toBe(false);
          expect(read.code).toBe(5);
        }
      }
      // Whatever FindMissingBlobs claims present must read back whole (checked above for all).
      const claimed: any = await call(c2.cas, 'FindMissingBlobs', { blobDigests: unacked.map((u) => digestOf(u.data)) });
      expect(unacked.length - claimed.missingBlobDigests.length).toBe(unackedPresent);

      // The restarted daemon takes new uploads normally.
      const fresh = randomBytes(200 * KiB);
      expect(await bsWrite(c2.byteStream, fresh, { uuid: randomUUID() })).toEqual({ committedSize: fresh.length });
    } finally {
      c2.close();
    }
  });

  it('refuses a second daemon on the same data dir with a message naming the dir and the owner', async () => {
    const owner = daemons.find((p) => p.running()) ?? (await startDaemonProcess({ dataDir }).then((p) => (daemons.push(p), p)));
    const err = await startDaemonProcess({ dataDir, startTimeoutMs: 20_000 }).then(
      (p) => {
        daemons.push(p);
        return undefined;
      },
      (e: Error) => e,
    );
    expect(err, 'a second daemon started on a data dir in use').toBeInstanceOf(Error);
    expect(err!.message).toContain(dataDir);
    expect(err!.message).toContain(String(owner!.pid));
    expect(err!.message).toMatch(/already using the data dir/);
    // The first one is unharmed.
    const c = connect(owner!.address);
    try {
      const caps: any = await call(c.capabilities, 'GetCapabilities', {});
      expect(caps.cacheCapabilities.digestFunctions).toContain(1);
    } finally {
      c.close();
    }
  });
});
