import { call, type ReapiClients } from '../client/reapi-client.js';
import { re } from '../proto.js';
import { sha256Each } from './hash-baseline.js';
import { makeMetric, sizeLabel } from './metric.js';
import { RawGrpcBaseline } from './raw-grpc.js';
import { fillRandom, formatNumber, runConcurrent } from './stats.js';
import { asUnsupported, UnsupportedError, type SuiteProgress } from './support.js';
import type { Metric, SuiteResult, Unsupported } from './types.js';

const SHA256_VALUE = 1;
/** Bytes a blob adds to a batch request beyond its data (digest, sizes, tags), rounded up. */
const PER_BLOB_OVERHEAD = 100;

export interface CasSmallOptions {
  clients: ReapiClients;
  instance: string;
  raw: RawGrpcBaseline;
  /** Blob sizes of the sweep (100 B–64 KiB by default). */
  blobSizes: number[];
  /** Most blobs per batch request (1,000 by default); fewer when the endpoint's batch limit says so. */
  blobsPerBatch: number;
  /** Batch requests per repetition and concurrency. */
  batches: number;
  concurrency: number[];
  repeat: number;
  /** The endpoint's max_batch_total_size_bytes (0: none stated). */
  maxBatchBytes: number;
  progress: SuiteProgress;
}

export function casSmallSteps(o: Pick<CasSmallOptions, 'blobSizes' | 'concurrency' | 'repeat'>): number {
  return o.blobSizes.length * o.concurrency.length * o.repeat;
}

/** Blobs of `blobBytes` per batch: the requested count, or what fits the endpoint's limit (4 MiB when it states none: grpc's default message limit). */
export function blobsPerBatchFor(blobBytes: number, wanted: number, maxBatchBytes: number): number {
  const limit = (maxBatchBytes > 0 ? maxBatchBytes : 4 * 1024 * 1024) - 1024;
  return Math.max(1, Math.min(wanted, Math.floor(limit / (blobBytes + PER_BLOB_OVERHEAD))));
}

interface Batch {
  blobs: Buffer[];
  digests: { hash: string; sizeBytes: number }[];
  request: re.IBatchUpdateBlobsRequest;
}

/**
 * Small blobs through the batch calls, for each blob size and concurrency: BatchUpdateBlobs of
 * fresh blobs, then FindMissingBlobs and BatchReadBlobs of the same blobs, with `concurrency`
 * requests in flight. Each call's baseline is a raw grpc-js unary call carrying as many bytes
 * each way as one such request and its answer, as many times with the same concurrency; a
 * figure per blob is calls/s times the blobs per batch.
 */
export async function runCasSmall(o: CasSmallOptions): Promise<SuiteResult> {
  const metrics: Metric[] = [];
  const unsupported: Unsupported[] = [];
  const checks = { blobsUploaded: 0, uploadErrors: 0, blobsMissingAfterUpload: 0, blobsRead: 0, blobsReadMatching: 0 };

  /** `count` batches of fresh random blobs, hashed before any clock starts. */
  const makeBatches = async (count: number, blobBytes: number, perBatch: number): Promise<{ batches: Batch[]; shaSeconds: number }> => {
    const n = count * perBatch;
    const pool = await fillRandom(Buffer.allocUnsafe(n * blobBytes));
    const all = Array.from({ length: n }, (_, i) => pool.subarray(i * blobBytes, (i + 1) * blobBytes));
    const sha = sha256Each(all);
    const batches: Batch[] = [];
    for (let b = 0; b < count; b++) {
      const blobs = all.slice(b * perBatch, (b + 1) * perBatch);
      const digests = blobs.map((blob, i) => ({ hash: sha.hexes[b * perBatch + i]!, sizeBytes: blob.byteLength }));
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

  // Warm up (JIT, connections) with one small batch of other blobs, untimed; an endpoint
  // without the batch calls (or that refuses them) makes the suite unsupported.
  try {
    const [w] = (await makeBatches(1, o.blobSizes[0]!, Math.min(10, o.blobsPerBatch))).batches;
    await o.raw.roundTrip(RawGrpcBaseline.roundTripRequest(re.BatchUpdateBlobsRequest.encode(w!.request).finish().byteLength, 100));
    await call(o.clients.cas, 'BatchUpdateBlobs', w!.request).catch((e) => asUnsupported('BatchUpdateBlobs', e));
    await call(o.clients.cas, 'FindMissingBlobs', findRequest(w!)).catch((e) => asUnsupported('FindMissingBlobs', e));
    await call(o.clients.cas, 'BatchReadBlobs', readRequest(w!)).catch((e) => asUnsupported('BatchReadBlobs', e));
  } catch (err) {
    if (!(err instanceof UnsupportedError)) throw err;
    return { name: 'cas-small', status: 'unsupported', unsupported: [err.unsupported], params: {}, metrics: [], checks: {} };
  }

  const params: SuiteResult['params'] = { blobSizesBytes: o.blobSizes, batches: o.batches, concurrency: o.concurrency };
  for (const blobBytes of o.blobSizes) {
    const perBatch = blobsPerBatchFor(blobBytes, o.blobsPerBatch, o.maxBatchBytes);
    const perRep = o.batches * perBatch;
    params[`blobsPerBatch${sizeLabel(blobBytes)}`] = perBatch;
    for (const c of o.concurrency) {
      const s = { update: [] as number[], find: [] as number[], read: [] as number[], rawUpdate: [] as number[], rawFind: [] as number[], rawRead: [] as number[], sha: [] as number[] };
      const bytes = { update: [0, 0], find: [0, 0], read: [0, 0] };
      for (let rep = 1; rep <= o.repeat; rep++) {
        const { batches, shaSeconds } = await makeBatches(o.batches, blobBytes, perBatch);
        s.sha.push(perRep / shaSeconds);
        // The raw baselines carry as many bytes each way as the call they stand for.
        const b0 = batches[0]!;
        bytes.update = [
          re.BatchUpdateBlobsRequest.encode(b0.request).finish().byteLength,
          re.BatchUpdateBlobsResponse.encode({ responses: b0.digests.map((digest) => ({ digest, status: {} })) }).finish().byteLength,
        ];
        bytes.find = [re.FindMissingBlobsRequest.encode(findRequest(b0)).finish().byteLength, 0];
        bytes.read = [
          re.BatchReadBlobsRequest.encode(readRequest(b0)).finish().byteLength,
          re.BatchReadBlobsResponse.encode({ responses: b0.blobs.map((data, i) => ({ digest: b0.digests[i], data, status: {} })) }).finish().byteLength,
        ];
        const raw = { update: RawGrpcBaseline.roundTripRequest(bytes.update[0]!, bytes.update[1]!), find: RawGrpcBaseline.roundTripRequest(bytes.find[0]!, 0), read: RawGrpcBaseline.roundTripRequest(bytes.read[0]!, bytes.read[1]!) };
        const rate = async (fn: (b: Batch, i: number) => Promise<void>): Promise<number> => perRep / (await runConcurrent(batches.length, c, (i) => fn(batches[i]!, i))).seconds;

        s.rawUpdate.push(await rate(async () => void (await o.raw.roundTrip(raw.update))));
        const updated: re.IBatchUpdateBlobsResponse[] = [];
        s.update.push(await rate(async (b, i) => void (updated[i] = await call(o.clients.cas, 'BatchUpdateBlobs', b.request))));
        s.rawFind.push(await rate(async () => void (await o.raw.roundTrip(raw.find))));
        const found: re.IFindMissingBlobsResponse[] = [];
        s.find.push(await rate(async (b, i) => void (found[i] = await call(o.clients.cas, 'FindMissingBlobs', findRequest(b)))));
        s.rawRead.push(await rate(async () => void (await o.raw.roundTrip(raw.read))));
        const read: re.IBatchReadBlobsResponse[] = [];
        s.read.push(await rate(async (b, i) => void (read[i] = await call(o.clients.cas, 'BatchReadBlobs', readRequest(b)))));

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

        o.progress.step(
          `${perBatch} × ${sizeLabel(blobBytes)} per batch at concurrency ${c}, repetition ${rep}/${o.repeat}: BatchUpdateBlobs ${formatNumber(s.update.at(-1)!)} blobs/s, ` +
            `FindMissingBlobs ${formatNumber(s.find.at(-1)!)} digests/s, BatchReadBlobs ${formatNumber(s.read.at(-1)!)} blobs/s (raw ${formatNumber(s.rawUpdate.at(-1)!)}, ${formatNumber(s.rawFind.at(-1)!)}, ${formatNumber(s.rawRead.at(-1)!)})`,
        );
      }
      const at = c > 1 ? `, ${c} at once` : '';
      const rawCall = (name: string, [up, down]: number[], samples: number[]) => ({
        name: 'raw-grpc-unary',
        label: `raw grpc-js unary call of ${up} B answered with ${down} B (as one ${name}) × ${perBatch} blobs${at}`,
        samples,
      });
      const common = { suite: 'cas-small' as const, better: 'higher' as const, concurrency: c, sizeBytes: blobBytes };
      metrics.push(
        makeMetric({ ...common, name: 'batch-update', label: 'BatchUpdateBlobs', unit: 'blobs/s', samples: s.update, baseline: rawCall('BatchUpdateBlobs', bytes.update, s.rawUpdate) }),
        makeMetric({ ...common, name: 'find-missing', label: 'FindMissingBlobs', unit: 'digests/s', samples: s.find, baseline: rawCall('FindMissingBlobs', bytes.find, s.rawFind) }),
        makeMetric({ ...common, name: 'batch-read', label: 'BatchReadBlobs', unit: 'blobs/s', samples: s.read, baseline: rawCall('BatchReadBlobs', bytes.read, s.rawRead) }),
      );
      if (c === 1) {
        metrics.push(
          makeMetric({
            ...common,
            name: 'batch-update-vs-sha256',
            label: 'BatchUpdateBlobs vs hashing',
            unit: 'blobs/s',
            samples: s.update,
            baseline: { name: 'sha256', label: `SHA-256, node crypto, one digest per ${sizeLabel(blobBytes)} blob, one core`, samples: s.sha },
          }),
        );
      }
    }
  }
  return { name: 'cas-small', status: unsupported.length ? 'partial' : 'ok', unsupported, params, metrics, checks };
}
