import { randomUUID, createHash } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { ReapiClients } from '../client/reapi-client.js';
import type { bytestream } from '../proto.js';
import { sha256Stream } from './hash-baseline.js';
import { pumpWrites, type RawGrpcBaseline } from './raw-grpc.js';
import { fillRandom, formatNumber, median, MiB, timed } from './stats.js';
import type { Metric, SuiteResult } from './types.js';


export interface CasLargeOptions {
  clients: ReapiClients;
  instance: string;
  raw: RawGrpcBaseline;
  sizeBytes: number;
  chunkBytes: number;
  repeat: number;
  progress: (line: string) => void;
  /** Where the disk baseline writes its file (the target's filesystem when it is local), and whether it fsyncs. */
  disk: { dir: string; fsync: boolean; where: string };
}

function prefix(instance: string): string {
  return instance ? `${instance}/` : '';
}

/** ByteStream.Write of `data` in `chunk`-byte requests, honouring the stream's backpressure. */
export function byteStreamWrite(clients: ReapiClients, instance: string, data: Buffer, hash: string, chunk: number): Promise<number> {
  const size = data.byteLength;
  const resourceName = `${prefix(instance)}uploads/${randomUUID()}/blobs/${hash}/${size}`;
  return new Promise((resolve, reject) => {
    let finished = false;
    const call = clients.byteStream['Write']!(new grpc.Metadata(), (err: grpc.ServiceError | null, res: bytestream.WriteResponse) => {
      finished = true;
      if (err) reject(err);
      else resolve(Number(res.committedSize));
    }) as grpc.ClientWritableStream<bytestream.IWriteRequest>;
    const count = Math.max(1, Math.ceil(size / chunk));
    pumpWrites(
      call,
      count,
      (i) => {
        const off = i * chunk;
        const end = Math.min(size, off + chunk);
        return { resourceName: i === 0 ? resourceName : '', writeOffset: off, data: data.subarray(off, end), finishWrite: end === size };
      },
      () => finished,
    );
  });
}

/** ByteStream.Read of a whole blob; resolves with the chunks received (checked by the caller). */
export function byteStreamRead(clients: ReapiClients, instance: string, hash: string, size: number): Promise<Uint8Array[]> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    const call = clients.byteStream['Read']!({ resourceName: `${prefix(instance)}blobs/${hash}/${size}`, readOffset: 0, readLimit: 0 }) as grpc.ClientReadableStream<bytestream.ReadResponse>;
    call.on('data', (res: bytestream.ReadResponse) => chunks.push(res.data));
    call.on('error', reject);
    call.on('end', () => resolve(chunks));
  });
}

/**
 * The disk baseline: `data` written to a new file in `chunk`-byte writes, then fsynced if
 * asked. Returns the seconds and a remover: the caller keeps the file until the measurement
 * it is compared with is done, so that both write into new space (not over just-freed blocks).
 */
export async function diskWrite(dir: string, data: Buffer, chunk: number, fsync: boolean): Promise<{ seconds: number; remove: () => Promise<void> }> {
  const path = join(dir, `bench-disk-baseline-${randomUUID()}`);
  const remove = (): Promise<void> => rm(path, { force: true });
  const fh = await open(path, 'wx', 0o600);
  try {
    const t0 = process.hrtime.bigint();
    for (let off = 0; off < data.byteLength; ) {
      const { bytesWritten } = await fh.write(data, off, Math.min(chunk, data.byteLength - off), off);
      off += bytesWritten;
    }
    if (fsync) await fh.sync();
    return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, remove };
  } catch (err) {
    await remove();
    throw err;
  } finally {
    await fh.close().catch(() => undefined);
  }
}

const mibps = (bytes: number, seconds: number): number => bytes / MiB / seconds;

/**
 * One large blob up with ByteStream.Write and down with ByteStream.Read, each right after the
 * raw grpc-js stream of the same bytes in the same chunks; SHA-256 of the same bytes too.
 */
export async function runCasLarge(o: CasLargeOptions): Promise<SuiteResult> {
  const s = { write: [] as number[], read: [] as number[], rawUp: [] as number[], rawDown: [] as number[], sha: [] as number[], disk: [] as number[] };
  let bytesWritten = 0;
  let bytesRead = 0;
  let committedBytes = 0;
  let rawBytesUploaded = 0;
  let rawBytesDownloaded = 0;
  let contentMatches = true;
  // Warm up (JIT, connections, the first file in a fresh store) with a small blob, untimed.
  const warm = await fillRandom(Buffer.allocUnsafe(Math.min(o.sizeBytes, 8 * MiB)));
  const warmHash = createHash('sha256').update(warm).digest('hex');
  await o.raw.upload(warm, o.chunkBytes);
  await byteStreamWrite(o.clients, o.instance, warm, warmHash, o.chunkBytes);
  await o.raw.download(warm, o.chunkBytes);
  await byteStreamRead(o.clients, o.instance, warmHash, warm.byteLength);

  let data: Buffer | undefined = Buffer.allocUnsafe(o.sizeBytes);
  for (let rep = 1; rep <= o.repeat; rep++) {
    // Fresh random bytes each time: nothing can be deduplicated against an earlier run.
    await fillRandom(data);
    const sha = sha256Stream(data, o.chunkBytes);
    s.sha.push(mibps(o.sizeBytes, sha.seconds));

    const up = await timed(() => o.raw.upload(data!, o.chunkBytes));
    rawBytesUploaded += up.result;
    s.rawUp.push(mibps(o.sizeBytes, up.seconds));

    const disk = await diskWrite(o.disk.dir, data, o.chunkBytes, o.disk.fsync);
    s.disk.push(mibps(o.sizeBytes, disk.seconds));

    const write = await timed(() => byteStreamWrite(o.clients, o.instance, data!, sha.hex, o.chunkBytes)).finally(disk.remove);
    committedBytes += write.result;
    bytesWritten += o.sizeBytes;
    s.write.push(mibps(o.sizeBytes, write.seconds));

    const down = await timed(() => o.raw.download(data!, o.chunkBytes));
    rawBytesDownloaded += down.result;
    s.rawDown.push(mibps(o.sizeBytes, down.seconds));

    const read = await timed(() => byteStreamRead(o.clients, o.instance, sha.hex, o.sizeBytes));
    s.read.push(mibps(o.sizeBytes, read.seconds));
    // Checked after the clock stopped: every byte came back, and they are the bytes sent.
    const h = createHash('sha256');
    let n = 0;
    for (const c of read.result) {
      h.update(c);
      n += c.byteLength;
    }
    bytesRead += n;
    if (n !== o.sizeBytes || h.digest('hex') !== sha.hex) contentMatches = false;
    read.result.length = 0;

    o.progress(
      `cas-large ${rep}/${o.repeat}: ByteStream.Write ${formatNumber(s.write.at(-1)!)} MiB/s (raw ${formatNumber(s.rawUp.at(-1)!)}), ` +
        `ByteStream.Read ${formatNumber(s.read.at(-1)!)} MiB/s (raw ${formatNumber(s.rawDown.at(-1)!)}), SHA-256 ${formatNumber(s.sha.at(-1)!)} MiB/s, disk ${formatNumber(s.disk.at(-1)!)} MiB/s`,
    );
  }
  data = undefined;

  const metric = (name: string, label: string, samples: number[], bName: string, bLabel: string, bSamples: number[]): Metric => {
    const value = median(samples);
    const b = median(bSamples);
    return { name, label, value, unit: 'MiB/s', baseline: { name: bName, label: bLabel, value: b, unit: 'MiB/s' }, ratio: value / b, samples, baselineSamples: bSamples };
  };
  return {
    name: 'cas-large',
    params: { sizeBytes: o.sizeBytes, chunkBytes: o.chunkBytes, repeat: o.repeat, diskBaselineDir: o.disk.dir, diskBaselineFsync: String(o.disk.fsync) },
    metrics: [
      metric('bytestream-write', 'ByteStream.Write', s.write, 'raw-grpc-client-stream', 'raw grpc-js client stream, same bytes', s.rawUp),
      metric('bytestream-read', 'ByteStream.Read', s.read, 'raw-grpc-server-stream', 'raw grpc-js server stream, same bytes', s.rawDown),
      metric('bytestream-write-vs-disk', 'ByteStream.Write vs disk', s.write, 'file-write', `file write of the same bytes in ${o.chunkBytes / MiB} MiB writes${o.disk.fsync ? ' + fsync' : ''}, ${o.disk.where}`, s.disk),
      metric('bytestream-write-vs-sha256', 'ByteStream.Write vs hashing', s.write, 'sha256', 'SHA-256, node crypto, same chunks', s.sha),
    ],
    checks: {
      bytesWritten,
      committedBytes,
      bytesRead,
      contentMatches,
      rawBytesUploaded,
      rawBytesDownloaded,
    },
  };
}
