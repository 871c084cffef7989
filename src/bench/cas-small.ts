import { call, type ReapiClients } from '../client/reapi-client.js';
import { re } from '../proto.js';
import { sha256Each } from './hash-baseline.js';
import type { RawGrpcBaseline } from './raw-grpc.js';
import { fillRandom, formatNumber, median } from './stats.js';
import type { Metric, SuiteResult } from './types.js';

const SHA256_VALUE = 1;

export interface CasSmallOptions {
  clients: ReapiClients;
  instance: string;
  raw: RawGrpcBaseline;
  /** Blobs per batch request (1,000 by default). */
  blobsPerBatch: number;
  /** Bytes per blob (100 by default). */
  blobBytes: number;
  /** Batch requests per repetition, made one after another. */
  batches: number;
  repeat: number;
  progress: (line: string) => void;
}

interface Batch {
  blobs: Buffer[];
  digests: { hash: string; sizeBytes: number }[];
  request: re.IBatchUpdateBlobsRequest;
}

/**
 * Small blobs through the batch calls, each batch sequential: BatchUpdateBlobs, then
 * FindMissingBlobs and BatchReadBlobs of the same blobs. The baseline is a raw grpc-js unary
 * echo of a payload as large as one encoded BatchUpdateBlobs request, as many times; a figure
 * per blob is its calls/s times the blobs per batch.
 */
export async function runCasSmall(o: CasSmallOptions): Promise<SuiteResult> {
  const s = { update: [] as number[], find: [] as number[], read: [] as number[], echo: [] as number[], sha: [] as number[] };
  const checks = { blobsUploaded: 0, uploadErrors: 0, blobsMissingAfterUpload: 0, blobsRead: 0, blobsReadMatching: 0, requestBytes: 0 };
  const perRep = o.batches * o.blobsPerBatch;

  /** `count` batches of fresh random blobs, hashed before any clock starts. */
  const makeBatches = async (count: number): Promise<{ batches: Batch[]; shaSeconds: number }> => {
    const n = count * o.blobsPerBatch;
    const pool = await fillRandom(Buffer.allocUnsafe(n * o.blobBytes));
    const all = Array.from({ length: n }, (_, i) => pool.subarray(i * o.blobBytes, (i + 1) * o.blobBytes));
    const sha = sha256Each(all);
    const batches: Batch[] = [];
    for (let b = 0; b < count; b++) {
      const blobs = all.slice(b * o.blobsPerBatch, (b + 1) * o.blobsPerBatch);
      const digests = blobs.map((blob, i) => ({ hash: sha.hexes[b * o.blobsPerBatch + i]!, sizeBytes: blob.byteLength }));
      batches.push({
        blobs,
        digests,
        request: { instanceName: o.instance, requests: blobs.map((data, i) => ({ digest: digests[i], data })), digestFunction: SHA256_VALUE },
      });
    }
    return { batches, shaSeconds: sha.seconds };
  };
  const findRequest = (b: Batch) => ({ instanceName: o.instance, blobDigests: b.digests, digestFunction: SHA256_VALUE });
  const readRequest = (b: Batch) => ({ instanceName: o.instance, digests: b.digests, digestFunction: SHA256_VALUE });

  // Warm up (JIT, connections) with one batch of other blobs, untimed.
  {
    const [w] = (await makeBatches(1)).batches;
    await o.raw.echo(Buffer.from(re.BatchUpdateBlobsRequest.encode(w!.request).finish()));
    await call(o.clients.cas, 'BatchUpdateBlobs', w!.request);
    await call(o.clients.cas, 'FindMissingBlobs', findRequest(w!));
    await call(o.clients.cas, 'BatchReadBlobs', readRequest(w!));
  }

  for (let rep = 1; rep <= o.repeat; rep++) {
    const { batches, shaSeconds } = await makeBatches(o.batches);
    s.sha.push(perRep / shaSeconds);
    const requestBytes = re.BatchUpdateBlobsRequest.encode(batches[0]!.request).finish().byteLength;
    checks.requestBytes = requestBytes;
    const echoPayload = await fillRandom(Buffer.allocUnsafe(requestBytes));

    const seconds = async (fn: (b: Batch, i: number) => Promise<void>): Promise<number> => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < batches.length; i++) await fn(batches[i]!, i);
      return Number(process.hrtime.bigint() - t0) / 1e9;
    };

    s.echo.push(perRep / (await seconds(async () => void (await o.raw.echo(echoPayload)))));

    const updated: re.IBatchUpdateBlobsResponse[] = [];
    s.update.push(perRep / (await seconds(async (b) => void updated.push(await call(o.clients.cas, 'BatchUpdateBlobs', b.request)))));

    const found: re.IFindMissingBlobsResponse[] = [];
    s.find.push(
      perRep /
        (await seconds(async (b) => void found.push(await call(o.clients.cas, 'FindMissingBlobs', findRequest(b))))),
    );

    const read: re.IBatchReadBlobsResponse[] = [];
    s.read.push(
      perRep /
        (await seconds(async (b) => void read.push(await call(o.clients.cas, 'BatchReadBlobs', readRequest(b))))),
    );

    // Checked after the clocks stopped.
    for (const res of updated) {
      for (const r of res.responses ?? []) {
        if ((r.status?.code ?? 0) === 0) checks.blobsUploaded++;
        else checks.uploadErrors++;
      }
    }
    for (const res of found) checks.blobsMissingAfterUpload += res.missingBlobDigests?.length ?? 0;
    batches.forEach((b, i) => {
      const byHash = new Map(b.digests.map((d, j) => [d.hash, b.blobs[j]!]));
      for (const r of read[i]?.responses ?? []) {
        checks.blobsRead++;
        const want = byHash.get(r.digest?.hash ?? '');
        if ((r.status?.code ?? 0) === 0 && want && r.data && Buffer.compare(Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength), want) === 0) {
          checks.blobsReadMatching++;
        }
      }
    });

    o.progress(
      `cas-small ${rep}/${o.repeat}: BatchUpdateBlobs ${formatNumber(s.update.at(-1)!)} blobs/s, FindMissingBlobs ${formatNumber(s.find.at(-1)!)} digests/s, ` +
        `BatchReadBlobs ${formatNumber(s.read.at(-1)!)} blobs/s (raw echo ${formatNumber(s.echo.at(-1)!)} blobs/s, SHA-256 ${formatNumber(s.sha.at(-1)!)} blobs/s)`,
    );
  }

  const echoLabel = `raw grpc-js unary echo of ${checks.requestBytes} B (a BatchUpdateBlobs request's size), × ${o.blobsPerBatch} blobs`;
  const metric = (name: string, label: string, unit: string, samples: number[], bName: string, bLabel: string, bSamples: number[]): Metric => {
    const value = median(samples);
    const b = median(bSamples);
    return { name, label, value, unit, baseline: { name: bName, label: bLabel, value: b, unit }, ratio: value / b, samples, baselineSamples: bSamples };
  };
  return {
    name: 'cas-small',
    params: { blobsPerBatch: o.blobsPerBatch, blobBytes: o.blobBytes, batches: o.batches, repeat: o.repeat, requestBytes: checks.requestBytes },
    metrics: [
      metric('batch-update', 'BatchUpdateBlobs', 'blobs/s', s.update, 'raw-grpc-unary-echo', echoLabel, s.echo),
      metric('find-missing', 'FindMissingBlobs', 'digests/s', s.find, 'raw-grpc-unary-echo', echoLabel, s.echo),
      metric('batch-read', 'BatchReadBlobs', 'blobs/s', s.read, 'raw-grpc-unary-echo', echoLabel, s.echo),
      metric('batch-update-vs-sha256', 'BatchUpdateBlobs vs hashing', 'blobs/s', s.update, 'sha256', `SHA-256, node crypto, one digest per ${o.blobBytes} B blob`, s.sha),
    ],
    checks: { ...checks, blobsPerRepetition: perRep },
  };
}
