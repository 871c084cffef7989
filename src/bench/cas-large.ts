import { randomUUID, createHash } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { call, type ReapiClients } from '../client/reapi-client.js';
import type { bytestream } from '../proto.js';
import { runCompressedByteStream } from './cas-compression.js';
import { makeMetric, sizeLabel } from './metric.js';
import { pumpWrites, type RawGrpcBaseline } from './raw-grpc.js';
import { fillRandom, formatNumber, MiB, runConcurrent, timed } from './stats.js';
import { unsupportedReason, type SuiteProgress } from './support.js';
import type { Metric, SuiteResult, Unsupported } from './types.js';

export interface CasLargeOptions {
  clients: ReapiClients;
  instance: string;
  raw: RawGrpcBaseline;
  /** Blob sizes of the size sweep (each at concurrency 1). */
  sizes: number[];
  /** The blob size of the concurrency sweep and of the resumable write. */
  sweepSize: number;
  concurrency: number[];
  chunkBytes: number;
  repeat: number;
  /** Each cell moves at least this many bytes per repetition (several blobs when they are small). */
  minBytesPerCell: number;
  progress: SuiteProgress;
  /** Where the disk baseline writes its files (the target's filesystem when it is local), and whether it fsyncs. */
  disk: { dir: string; fsync: boolean; where: string };
}

interface Cell {
  size: number;
  concurrency: number;
  /** Blobs per repetition. */
  count: number;
}

function cells(o: Pick<CasLargeOptions, 'sizes' | 'sweepSize' | 'concurrency' | 'minBytesPerCell'>): Cell[] {
  const out: Cell[] = [];
  const add = (size: number, concurrency: number): void => {
    if (out.some((c) => c.size === size && c.concurrency === concurrency)) return;
    out.push({ size, concurrency, count: Math.max(concurrency, Math.ceil(o.minBytesPerCell / size)) });
  };
  for (const size of o.sizes) add(size, 1);
  for (const c of o.concurrency) add(o.sweepSize, c);
  return out;
}

/** Progress steps of the suite: one per cell and repetition, one per zstd comparison and one per resumable write. */
export function casLargeSteps(o: Pick<CasLargeOptions, 'sizes' | 'sweepSize' | 'concurrency' | 'minBytesPerCell' | 'repeat'>): number {
  return (cells(o).length + 2) * o.repeat;
}

function prefix(instance: string): string {
  return instance ? `${instance}/` : '';
}

export const uploadName = (instance: string, hash: string, size: number): string => `${prefix(instance)}uploads/${randomUUID()}/blobs/${hash}/${size}`;

/**
 * ByteStream.Write of `data` (the blob's bytes from `offset` on) in `chunk`-byte requests,
 * honouring the stream's backpressure. With `finish` false the stream is half-closed without
 * finish_write (an interrupted upload).
 */
export function byteStreamWrite(clients: ReapiClients, resourceName: string, data: Buffer, chunk: number, opts: { offset?: number; finish?: boolean } = {}): Promise<number> {
  const offset = opts.offset ?? 0;
  const finish = opts.finish ?? true;
  const size = data.byteLength;
  return new Promise((resolve, reject) => {
    let finished = false;
    const stream = clients.byteStream['Write']!(new grpc.Metadata(), (err: grpc.ServiceError | null, res: bytestream.WriteResponse) => {
      finished = true;
      if (err) reject(err);
      else resolve(Number(res.committedSize));
    }) as grpc.ClientWritableStream<bytestream.IWriteRequest>;
    const count = Math.max(1, Math.ceil(size / chunk));
    pumpWrites(
      stream,
      count,
      (i) => {
        const off = i * chunk;
        const end = Math.min(size, off + chunk);
        return { resourceName: i === 0 ? resourceName : '', writeOffset: offset + off, data: data.subarray(off, end), finishWrite: finish && end === size };
      },
      () => finished,
    );
  });
}

/** ByteStream.Read of a whole blob; resolves with the chunks received (checked by the caller). */
export function byteStreamRead(clients: ReapiClients, instance: string, hash: string, size: number): Promise<Uint8Array[]> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    const stream = clients.byteStream['Read']!({ resourceName: `${prefix(instance)}blobs/${hash}/${size}`, readOffset: 0, readLimit: 0 }) as grpc.ClientReadableStream<bytestream.ReadResponse>;
    stream.on('data', (res: bytestream.ReadResponse) => chunks.push(res.data));
    stream.on('error', reject);
    stream.on('end', () => resolve(chunks));
  });
}

/**
 * The disk baseline: `data` written to a new file in `chunk`-byte writes, then fsynced if
 * asked. Returns a remover: the caller keeps the file until the measurement it is compared
 * with is done, so that both write into new space (not over just-freed blocks).
 */
export async function diskWrite(dir: string, data: Buffer, chunk: number, fsync: boolean): Promise<() => Promise<void>> {
  const path = join(dir, `bench-disk-baseline-${randomUUID()}`);
  const remove = (): Promise<void> => rm(path, { force: true });
  const fh = await open(path, 'wx', 0o600);
  try {
    for (let off = 0; off < data.byteLength; ) {
      const { bytesWritten } = await fh.write(data, off, Math.min(chunk, data.byteLength - off), off);
      off += bytesWritten;
    }
    if (fsync) await fh.sync();
    return remove;
  } catch (err) {
    await remove();
    throw err;
  } finally {
    await fh.close().catch(() => undefined);
  }
}

const mibps = (bytes: number, seconds: number): number => bytes / MiB / seconds;

function sha256Hex(data: Uint8Array, chunk: number): string {
  const h = createHash('sha256');
  for (let off = 0; off < data.byteLength; off += chunk) h.update(data.subarray(off, Math.min(data.byteLength, off + chunk)));
  return h.digest('hex');
}

/**
 * Large blobs up with ByteStream.Write and down with ByteStream.Read: a size sweep at
 * concurrency 1 and a concurrency sweep at one size, each right after the raw grpc-js stream of
 * the same bytes in the same chunks with the same concurrency, a plain file write of the same
 * bytes and (at concurrency 1) SHA-256 of them. Then a resumable write: half a blob, the stream
 * broken off, QueryWriteStatus, and the rest from the offset the server reports.
 */
export async function runCasLarge(o: CasLargeOptions): Promise<SuiteResult> {
  const metrics: Metric[] = [];
  const unsupported: Unsupported[] = [];
  const checks = { bytesWritten: 0, committedBytes: 0, bytesRead: 0, contentMatches: true, rawBytesUploaded: 0, rawBytesDownloaded: 0 };
  const chunkLabel = `${sizeLabel(o.chunkBytes)} messages`;

  // Warm up (JIT, connections, the first file in a fresh store) with a small blob, untimed.
  {
    const warm = await fillRandom(Buffer.allocUnsafe(Math.min(Math.max(...o.sizes, o.sweepSize), 8 * MiB)));
    const hash = createHash('sha256').update(warm).digest('hex');
    o.raw.setPayload(warm);
    await o.raw.upload(warm, o.chunkBytes);
    await byteStreamWrite(o.clients, uploadName(o.instance, hash, warm.byteLength), warm, o.chunkBytes);
    await o.raw.download(0, warm.byteLength, o.chunkBytes);
    await byteStreamRead(o.clients, o.instance, hash, warm.byteLength);
  }

  for (const cell of cells(o)) {
    const s = { write: [] as number[], read: [] as number[], rawUp: [] as number[], rawDown: [] as number[], sha: [] as number[], disk: [] as number[] };
    const { size, concurrency: c, count } = cell;
    const bytes = size * count;
    let pool: Buffer | undefined = Buffer.allocUnsafe(bytes);
    const blob = (i: number): Buffer => pool!.subarray(i * size, (i + 1) * size);
    for (let rep = 1; rep <= o.repeat; rep++) {
      // Fresh random bytes each time: nothing can be deduplicated against an earlier run.
      await fillRandom(pool);
      const sha = await timed(async () => Array.from({ length: count }, (_, i) => sha256Hex(blob(i), o.chunkBytes)));
      const hashes = sha.result;
      s.sha.push(mibps(bytes, sha.seconds));

      // (Each count is added after its await: `x += await y` would read x before the wait and lose concurrent additions.)
      const up = await runConcurrent(count, c, async (i) => {
        const n = await o.raw.upload(blob(i), o.chunkBytes);
        checks.rawBytesUploaded += n;
      });
      s.rawUp.push(mibps(bytes, up.seconds));

      const removers: (() => Promise<void>)[] = [];
      try {
        const disk = await runConcurrent(count, c, async (i) => void removers.push(await diskWrite(o.disk.dir, blob(i), o.chunkBytes, o.disk.fsync)));
        s.disk.push(mibps(bytes, disk.seconds));
        const write = await runConcurrent(count, c, async (i) => {
          const n = await byteStreamWrite(o.clients, uploadName(o.instance, hashes[i]!, size), blob(i), o.chunkBytes);
          checks.committedBytes += n;
        });
        checks.bytesWritten += bytes;
        s.write.push(mibps(bytes, write.seconds));
      } finally {
        await Promise.all(removers.map((r) => r()));
      }

      o.raw.setPayload(pool);
      const down = await runConcurrent(count, c, async (i) => {
        const n = await o.raw.download(i * size, size, o.chunkBytes);
        checks.rawBytesDownloaded += n;
      });
      o.raw.setPayload(Buffer.alloc(0));
      s.rawDown.push(mibps(bytes, down.seconds));

      const received: Uint8Array[][] = new Array(count);
      const read = await runConcurrent(count, c, async (i) => void (received[i] = await byteStreamRead(o.clients, o.instance, hashes[i]!, size)));
      s.read.push(mibps(bytes, read.seconds));
      // Checked after the clock stopped: every byte came back, and they are the bytes sent.
      for (let i = 0; i < count; i++) {
        const h = createHash('sha256');
        let n = 0;
        for (const chunk of received[i] ?? []) {
          h.update(chunk);
          n += chunk.byteLength;
        }
        checks.bytesRead += n;
        if (n !== size || h.digest('hex') !== hashes[i]) checks.contentMatches = false;
      }
      received.length = 0;

      o.progress.step(
        `${sizeLabel(size)} ×${count} at concurrency ${c}, repetition ${rep}/${o.repeat}: ByteStream.Write ${formatNumber(s.write.at(-1)!)} MiB/s (raw ${formatNumber(s.rawUp.at(-1)!)}, disk ${formatNumber(s.disk.at(-1)!)}), ` +
          `ByteStream.Read ${formatNumber(s.read.at(-1)!)} MiB/s (raw ${formatNumber(s.rawDown.at(-1)!)})`,
      );
    }
    pool = undefined;

    const common = { suite: 'cas-large' as const, unit: 'MiB/s', better: 'higher' as const, concurrency: c, sizeBytes: size };
    const streams = c === 1 ? '' : `, ${c} at once`;
    metrics.push(
      makeMetric({ ...common, name: 'bytestream-write', label: 'ByteStream.Write', samples: s.write, baseline: { name: 'raw-grpc-client-stream', label: `raw grpc-js client stream, same bytes in ${chunkLabel}${streams}`, samples: s.rawUp } }),
      makeMetric({ ...common, name: 'bytestream-read', label: 'ByteStream.Read', samples: s.read, baseline: { name: 'raw-grpc-server-stream', label: `raw grpc-js server stream, same bytes in ${chunkLabel}${streams}`, samples: s.rawDown } }),
      makeMetric({
        ...common,
        name: 'bytestream-write-vs-disk',
        label: 'ByteStream.Write vs disk',
        samples: s.write,
        baseline: { name: 'file-write', label: `file write of the same bytes${o.disk.fsync ? ' + fsync' : ''}${streams}, ${o.disk.where}`, samples: s.disk },
      }),
    );
    if (c === 1) {
      metrics.push(makeMetric({ ...common, name: 'bytestream-write-vs-sha256', label: 'ByteStream.Write vs hashing', samples: s.write, baseline: { name: 'sha256', label: 'SHA-256 of the same bytes, node crypto, one core', samples: s.sha } }));
    }
  }

  const zstd = await runCompressedByteStream({ clients: o.clients, instance: o.instance, size: o.sweepSize, chunkBytes: o.chunkBytes, repeat: o.repeat, progress: o.progress });
  if ('unsupported' in zstd) unsupported.push(zstd.unsupported);
  else {
    metrics.push(...zstd.metrics);
    Object.assign(checks, zstd.checks);
    if (!zstd.checks.zstdContentMatches) checks.contentMatches = false;
  }

  const resumable = await runResumable(o);
  if ('unsupported' in resumable) unsupported.push(resumable.unsupported);
  else {
    metrics.push(resumable.metric);
    Object.assign(checks, resumable.checks);
    if (!resumable.checks.resumedContentMatches) checks.contentMatches = false;
  }

  return {
    name: 'cas-large',
    status: unsupported.length ? 'partial' : 'ok',
    unsupported,
    params: {
      sizesBytes: o.sizes,
      sweepSizeBytes: o.sweepSize,
      concurrency: o.concurrency,
      chunkBytes: o.chunkBytes,
      minBytesPerCell: o.minBytesPerCell,
      diskBaselineDir: o.disk.dir,
      diskBaselineFsync: String(o.disk.fsync),
    },
    metrics,
    checks,
  };
}

/**
 * An interrupted upload resumed: the first half of a blob in a Write stream closed without
 * finish_write, then (timed) QueryWriteStatus and a second Write from the committed offset.
 * The baseline is a raw grpc-js client stream of as many bytes as the resumed write sent.
 */
async function runResumable(o: CasLargeOptions): Promise<{ metric: Metric; checks: Record<string, number | boolean> } | { unsupported: Unsupported }> {
  const size = Math.max(2, o.sweepSize);
  const s = { resumed: [] as number[], raw: [] as number[] };
  const checks = { resumedUploads: 0, bytesKeptAfterBreak: 0, bytesSentAfterResume: 0, resumedCommittedBytes: 0, resumedContentMatches: true };
  const data = Buffer.allocUnsafe(size);
  for (let rep = 1; rep <= o.repeat; rep++) {
    await fillRandom(data);
    const hash = sha256Hex(data, o.chunkBytes);
    const name = uploadName(o.instance, hash, size);
    const half = Math.floor(size / 2);
    await byteStreamWrite(o.clients, name, data.subarray(0, half), o.chunkBytes, { finish: false }).catch(() => undefined);

    let committed: number;
    let rest: Buffer;
    const resumed = await timed(async () => {
      let status: bytestream.QueryWriteStatusResponse;
      try {
        status = await call(o.clients.byteStream, 'QueryWriteStatus', { resourceName: name });
      } catch (err) {
        const reason = unsupportedReason(err) ?? ((err as grpc.ServiceError).code === grpc.status.NOT_FOUND ? `the endpoint kept nothing of a broken upload (QueryWriteStatus: NOT_FOUND: ${(err as grpc.ServiceError).details})` : undefined);
        if (reason) return { unsupported: { what: 'resumable ByteStream.Write', reason } };
        throw err;
      }
      committed = Number(status.committedSize);
      if (committed <= 0 || committed > size) return { unsupported: { what: 'resumable ByteStream.Write', reason: `QueryWriteStatus reports ${committed} bytes of a broken upload of ${half}: nothing to resume from` } };
      rest = data.subarray(committed);
      const done = rest.byteLength === 0 ? size : await byteStreamWrite(o.clients, name, rest, o.chunkBytes, { offset: committed });
      checks.resumedCommittedBytes += done;
      return undefined;
    });
    if (resumed.result) return resumed.result;
    checks.resumedUploads++;
    checks.bytesKeptAfterBreak += committed!;
    checks.bytesSentAfterResume += rest!.byteLength;
    s.resumed.push(mibps(rest!.byteLength, resumed.seconds));
    const raw = await timed(() => o.raw.upload(rest, o.chunkBytes));
    s.raw.push(mibps(rest!.byteLength, raw.seconds));

    const back = await byteStreamRead(o.clients, o.instance, hash, size);
    const h = createHash('sha256');
    let n = 0;
    for (const c of back) {
      h.update(c);
      n += c.byteLength;
    }
    if (n !== size || h.digest('hex') !== hash) checks.resumedContentMatches = false;
    o.progress.step(`resumable write of ${sizeLabel(size)}, repetition ${rep}/${o.repeat}: ${committed!} bytes kept after the break, the rest at ${formatNumber(s.resumed.at(-1)!)} MiB/s (raw ${formatNumber(s.raw.at(-1)!)})`);
  }
  return {
    metric: makeMetric({
      suite: 'cas-large',
      name: 'bytestream-write-resumed',
      label: 'ByteStream.Write resumed (QueryWriteStatus + the rest)',
      unit: 'MiB/s',
      better: 'higher',
      concurrency: 1,
      sizeBytes: size,
      samples: s.resumed,
      baseline: { name: 'raw-grpc-client-stream', label: 'raw grpc-js client stream of the bytes sent after the resume', samples: s.raw },
    }),
    checks,
  };
}
