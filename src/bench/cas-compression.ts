import { createHash, randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { compress as libzstd } from '@mongodb-js/zstd';
import { Decompress } from 'fzstd';
import { call, type ReapiClients } from '../client/reapi-client.js';
import type { bytestream, re } from '../proto.js';
import { byteStreamRead, byteStreamWrite, uploadName } from './cas-large.js';
import { makeMetric, sizeLabel } from './metric.js';
import { formatNumber, MiB, timed } from './stats.js';
import type { SuiteProgress } from './support.js';
import type { Metric, Unsupported } from './types.js';

const ZSTD = 1;

export interface CompressionBenchOptions {
  clients: ReapiClients;
  instance: string;
  size: number;
  chunkBytes: number;
  repeat: number;
  progress: SuiteProgress;
}

/**
 * Build-output-like text that zstd shrinks several times over: lines of words drawn from a
 * vocabulary that is new on every call (so nothing deduplicates against an earlier blob).
 */
export function compressibleText(size: number): Buffer {
  const vocabulary = Array.from({ length: 2000 }, () => createHash('sha256').update(randomUUID()).digest('base64url').slice(0, 3 + Math.floor(Math.random() * 10)));
  const out = Buffer.allocUnsafe(size);
  let pos = 0;
  while (pos < size) {
    const word = vocabulary[Math.floor(Math.random() * vocabulary.length)]!;
    pos += out.write(Math.random() < 0.08 ? `${word}\n` : `${word} `, pos);
  }
  return out;
}

const prefix = (instance: string): string => (instance ? `${instance}/` : '');

/**
 * ByteStream with and without zstd on the same kind of compressible data, in one run: a
 * compressed-blobs/zstd Write (one frame for the whole blob, as Bazel sends it, compressed
 * before the clock starts: that is the client's work) against an identity Write of a blob of
 * the same size, and a compressed Read (the server compresses as it sends) against an
 * identity Read of the same blob. Throughput counts uncompressed bytes, so the ratio is how
 * much faster (or slower) a blob moves compressed, on this link.
 */
export async function runCompressedByteStream(o: CompressionBenchOptions): Promise<{ metrics: Metric[]; checks: Record<string, number | boolean> } | { unsupported: Unsupported }> {
  const caps = (await call(o.clients.capabilities, 'GetCapabilities', { instanceName: o.instance })) as re.ServerCapabilities;
  if (!(caps.cacheCapabilities?.supportedCompressors ?? []).includes(ZSTD)) {
    return { unsupported: { what: 'compressed ByteStream (zstd)', reason: 'the endpoint does not list zstd in supported_compressors' } };
  }
  const s = { write: [] as number[], identityWrite: [] as number[], read: [] as number[], identityRead: [] as number[] };
  const checks = { zstdBytesWritten: 0, zstdWireBytesWritten: 0, zstdBytesRead: 0, zstdWireBytesRead: 0, zstdContentMatches: true };
  const mibps = (seconds: number): number => o.size / MiB / seconds;
  for (let rep = 1; rep <= o.repeat; rep++) {
    const plain = compressibleText(o.size);
    const other = compressibleText(o.size);
    const hash = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    const [plainHash, otherHash] = [hash(plain), hash(other)];
    const frame = await libzstd(other, 3);

    const identity = await timed(() => byteStreamWrite(o.clients, uploadName(o.instance, plainHash, o.size), plain, o.chunkBytes));
    s.identityWrite.push(mibps(identity.seconds));
    const zName = `${prefix(o.instance)}uploads/${randomUUID()}/compressed-blobs/zstd/${otherHash}/${o.size}`;
    const written = await timed(() => byteStreamWrite(o.clients, zName, frame, o.chunkBytes));
    s.write.push(mibps(written.seconds));
    checks.zstdBytesWritten += o.size;
    checks.zstdWireBytesWritten += frame.byteLength;
    if (written.result !== frame.byteLength) checks.zstdContentMatches = false;

    const identityRead = await timed(() => byteStreamRead(o.clients, o.instance, plainHash, o.size));
    s.identityRead.push(mibps(identityRead.seconds));
    const read = await timed(
      () =>
        new Promise<Uint8Array[]>((resolve, reject) => {
          const chunks: Uint8Array[] = [];
          const stream = o.clients.byteStream['Read']!({ resourceName: `${prefix(o.instance)}compressed-blobs/zstd/${plainHash}/${o.size}`, readOffset: 0, readLimit: 0 }) as grpc.ClientReadableStream<bytestream.ReadResponse>;
          stream.on('data', (res: bytestream.ReadResponse) => chunks.push(res.data));
          stream.on('error', reject);
          stream.on('end', () => resolve(chunks));
        }),
    );
    s.read.push(mibps(read.seconds));
    // Checked after the clock stopped: the stream decompresses to the blob.
    const back = createHash('sha256');
    let n = 0;
    const decoder = new Decompress((d) => {
      back.update(d);
      n += d.byteLength;
    });
    for (const c of read.result) {
      checks.zstdWireBytesRead += c.byteLength;
      decoder.push(c);
    }
    decoder.push(new Uint8Array(0), true);
    checks.zstdBytesRead += n;
    if (n !== o.size || back.digest('hex') !== plainHash) checks.zstdContentMatches = false;
    o.progress.step(
      `zstd ByteStream of ${sizeLabel(o.size)} of text, repetition ${rep}/${o.repeat}: Write ${formatNumber(s.write.at(-1)!)} MiB/s (identity ${formatNumber(s.identityWrite.at(-1)!)}), ` +
        `Read ${formatNumber(s.read.at(-1)!)} MiB/s (identity ${formatNumber(s.identityRead.at(-1)!)})`,
    );
  }
  const common = { suite: 'cas-large' as const, unit: 'MiB/s', better: 'higher' as const, concurrency: 1, sizeBytes: o.size };
  const wire = (bytes: number, wireBytes: number): string => (wireBytes > 0 ? `${formatNumber(bytes / wireBytes)}:1 on the wire` : '');
  return {
    metrics: [
      makeMetric({
        ...common,
        name: 'bytestream-write-zstd',
        label: `ByteStream.Write, zstd (text, ${wire(checks.zstdBytesWritten, checks.zstdWireBytesWritten)})`,
        samples: s.write,
        baseline: { name: 'bytestream-write-identity', label: 'ByteStream.Write uncompressed, a blob of the same size and kind', samples: s.identityWrite },
      }),
      makeMetric({
        ...common,
        name: 'bytestream-read-zstd',
        label: `ByteStream.Read, zstd (text, ${wire(checks.zstdBytesRead, checks.zstdWireBytesRead)})`,
        samples: s.read,
        baseline: { name: 'bytestream-read-identity', label: 'ByteStream.Read uncompressed, the same blob', samples: s.identityRead },
      }),
    ],
    checks,
  };
}
