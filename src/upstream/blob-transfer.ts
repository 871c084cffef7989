import { randomUUID } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import type { BlobStore } from '../cas/blob-store.js';
import { SHA256 } from '../digest/digest-function.js';
import type { Digest } from '../digest/digest.js';
import type { bytestream, re } from '../proto.js';
import { UpstreamError, type UpstreamConnection } from './upstream-connection.js';
import { Code, StatusError } from '../util/status-error.js';

/** What a transfer needs of the upstream: its connection's calls (deadlines, health, errors naming it) and batch limit. */
export type UpstreamCas = Pick<UpstreamConnection, 'url' | 'instance' | 'capabilities' | 'unary' | 'serverStream' | 'clientStream'>;

/** What a batch holds besides the blobs' bytes (per entry: digest, status, framing), counted generously. */
const ENTRY_OVERHEAD = 256;
/** A batch when the upstream sets no limit: what fits in gRPC's default 4 MiB receive limit. */
const DEFAULT_BATCH = 4 * 1024 * 1024 - 64 * 1024;
/** FindMissingBlobs requests hold at most this many digests (well under 4 MiB). */
const FIND_MISSING_CHUNK = 10_000;
/** ByteStream chunks, as clients send them. */
const CHUNK = 1024 * 1024;
/**
 * An upstream call's failure as a status naming the upstream. A deadline on a call to the
 * upstream means it did not answer: for our client that is UNAVAILABLE.
 */
export function upstreamError(url: string, what: string, err: unknown): StatusError {
  if (err instanceof StatusError) return err;
  const e = err as grpc.ServiceError;
  const code = typeof e.code === 'number' ? e.code : Code.UNAVAILABLE;
  const mapped = code === Code.DEADLINE_EXCEEDED ? Code.UNAVAILABLE : code;
  // The connection's errors name the upstream already.
  if (err instanceof UpstreamError) return new StatusError(mapped, e.message);
  return new StatusError(mapped, `upstream ${url}: ${what} failed: ${e.details || e.message}`);
}

function batchLimit(up: UpstreamCas): number {
  const l = up.capabilities?.maxBatchTotalSizeBytes ?? 0;
  return l > 0 ? Math.min(l, DEFAULT_BATCH) : DEFAULT_BATCH;
}

/** Split digests into batches that fit the upstream's limit; blobs too big for any batch go through ByteStream. */
function plan(up: UpstreamCas, digests: readonly Digest[]): { batches: Digest[][]; streams: Digest[] } {
  const limit = batchLimit(up);
  const batches: Digest[][] = [];
  const streams: Digest[] = [];
  let batch: Digest[] = [];
  let bytes = 0;
  for (const d of digests) {
    const size = d.sizeBytes + ENTRY_OVERHEAD;
    if (size > limit / 2) {
      streams.push(d);
      continue;
    }
    if (bytes + size > limit) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(d);
    bytes += size;
  }
  if (batch.length > 0) batches.push(batch);
  return { batches, streams };
}

function resourceName(up: UpstreamCas, d: Digest, upload: boolean): string {
  const fn = d.fn === SHA256 ? '' : `${d.fn.name}/`;
  return `${up.instance ? `${up.instance}/` : ''}${upload ? `uploads/${randomUUID()}/` : ''}blobs/${fn}${d.hash}/${d.sizeBytes}`;
}

/** The digests among `digests` the upstream lacks. */
export async function upstreamMissing(up: UpstreamCas, digests: readonly Digest[], signal?: AbortSignal): Promise<Digest[]> {
  const missing: Digest[] = [];
  const nonEmpty = digests.filter((d) => !d.isEmpty);
  for (let i = 0; i < nonEmpty.length; i += FIND_MISSING_CHUNK) {
    const chunk = nonEmpty.slice(i, i + FIND_MISSING_CHUNK);
    let res: re.IFindMissingBlobsResponse;
    try {
      res = await up.unary('cas', 'FindMissingBlobs', { instanceName: up.instance, blobDigests: chunk.map((d) => d.toProto()), digestFunction: chunk[0]!.fn.value }, { signal });
    } catch (err) {
      throw upstreamError(up.url, 'FindMissingBlobs', err);
    }
    const gone = new Set((res.missingBlobDigests ?? []).map((d) => `${d.hash}/${Number(d.sizeBytes)}`));
    missing.push(...chunk.filter((d) => gone.has(`${d.hash}/${d.sizeBytes}`)));
  }
  return missing;
}

/**
 * Copy `digests` from the local store to the upstream: BatchUpdateBlobs within its batch
 * limit, ByteStream Write for blobs too big for a batch. Returns the bytes sent.
 */
export async function uploadBlobs(up: UpstreamCas, local: BlobStore, digests: readonly Digest[], signal?: AbortSignal): Promise<number> {
  const { batches, streams } = plan(up, digests);
  let sent = 0;
  for (const batch of batches) {
    const requests = await Promise.all(
      batch.map(async (d) => {
        const data = await local.get(d, { signal });
        if (!data) throw new StatusError(Code.FAILED_PRECONDITION, `blob ${d} is not in the local store any more (evicted?): it cannot be sent to upstream ${up.url}`);
        return { digest: d.toProto(), data };
      }),
    );
    let res: re.IBatchUpdateBlobsResponse;
    try {
      res = await up.unary('cas', 'BatchUpdateBlobs', { instanceName: up.instance, requests, digestFunction: batch[0]!.fn.value }, { signal });
    } catch (err) {
      throw upstreamError(up.url, `BatchUpdateBlobs of ${batch.length} blob(s)`, err);
    }
    const bad = (res.responses ?? []).find((r) => (r.status?.code ?? 0) !== 0);
    if (bad) throw new StatusError(bad.status!.code ?? Code.UNKNOWN, `upstream ${up.url} refused blob ${bad.digest?.hash}/${bad.digest?.sizeBytes}: ${bad.status?.message ?? ''}`);
    sent += batch.reduce((n, d) => n + d.sizeBytes, 0);
  }
  for (const d of streams) {
    await writeStream(up, local, d, signal);
    sent += d.sizeBytes;
  }
  return sent;
}

async function writeStream(up: UpstreamCas, local: BlobStore, d: Digest, signal?: AbortSignal): Promise<void> {
  const source = await local.read(d, 0, 0, { signal });
  if (!source) throw new StatusError(Code.FAILED_PRECONDITION, `blob ${d} is not in the local store any more (evicted?): it cannot be sent to upstream ${up.url}`);
  const name = resourceName(up, d, true);
  // The local chunks, cut to at most 1 MiB each, as ByteStream WriteRequests.
  async function* requests(): AsyncGenerator<bytestream.IWriteRequest> {
    let offset = 0;
    let pending = Buffer.alloc(0);
    for await (const chunk of source!) {
      pending = pending.byteLength ? Buffer.concat([pending, Buffer.from(chunk)]) : Buffer.from(chunk);
      while (pending.byteLength > CHUNK) {
        yield { resourceName: offset === 0 ? name : '', writeOffset: offset, data: pending.subarray(0, CHUNK), finishWrite: false };
        offset += CHUNK;
        pending = pending.subarray(CHUNK);
      }
    }
    yield { resourceName: offset === 0 ? name : '', writeOffset: offset, data: pending, finishWrite: true };
  }
  let res: bytestream.IWriteResponse;
  try {
    res = await up.clientStream<bytestream.IWriteRequest, bytestream.IWriteResponse>('byteStream', 'Write', requests(), { signal });
  } catch (err) {
    throw upstreamError(up.url, `ByteStream.Write of ${d}`, err);
  }
  if (Number(res.committedSize ?? 0) !== d.sizeBytes) throw new StatusError(Code.UNAVAILABLE, `upstream ${up.url} committed ${res.committedSize} of the ${d.sizeBytes} bytes of ${d}`);
}

/**
 * Copy `digests` from the upstream into the local store: BatchReadBlobs within its batch
 * limit, ByteStream Read for big blobs. A blob the upstream lacks is an error naming it.
 * Returns the bytes received.
 */
export async function downloadBlobs(up: UpstreamCas, local: BlobStore, digests: readonly Digest[], signal?: AbortSignal): Promise<number> {
  const { batches, streams } = plan(up, digests.filter((d) => !d.isEmpty));
  let received = 0;
  const lost = (d: Digest): StatusError =>
    new StatusError(Code.UNAVAILABLE, `upstream ${up.url} returned a result whose blob ${d} it does not hold (evicted there?); run the action again`);
  for (const batch of batches) {
    let res: re.IBatchReadBlobsResponse;
    try {
      res = await up.unary('cas', 'BatchReadBlobs', { instanceName: up.instance, digests: batch.map((d) => d.toProto()), digestFunction: batch[0]!.fn.value }, { signal });
    } catch (err) {
      throw upstreamError(up.url, `BatchReadBlobs of ${batch.length} blob(s)`, err);
    }
    const byKey = new Map((res.responses ?? []).map((r) => [`${r.digest?.hash}/${Number(r.digest?.sizeBytes ?? 0)}`, r]));
    for (const d of batch) {
      const r = byKey.get(`${d.hash}/${d.sizeBytes}`);
      if (!r || (r.status?.code ?? 0) === Code.NOT_FOUND) throw lost(d);
      if (r.status?.code) throw new StatusError(r.status.code, `upstream ${up.url}: reading ${d} failed: ${r.status.message ?? ''}`);
      // Stored through the local store's checks: a blob that does not match its digest is refused.
      await local.put(d, r.data ?? new Uint8Array(), { signal });
      received += d.sizeBytes;
    }
  }
  for (const d of streams) {
    await readStream(up, local, d, lost, signal);
    received += d.sizeBytes;
  }
  return received;
}

async function readStream(up: UpstreamCas, local: BlobStore, d: Digest, lost: (d: Digest) => StatusError, signal?: AbortSignal): Promise<void> {
  const writer = await local.beginWrite(d, { signal });
  try {
    for await (const msg of up.serverStream<bytestream.IReadResponse>('byteStream', 'Read', { resourceName: resourceName(up, d, false), readOffset: 0, readLimit: 0 }, { signal })) {
      await writer.write(Buffer.from(msg.data ?? new Uint8Array()));
    }
    await writer.commit();
  } catch (err) {
    await writer.abort();
    if ((err as grpc.ServiceError).code === Code.NOT_FOUND) throw lost(d);
    throw upstreamError(up.url, `ByteStream.Read of ${d}`, err);
  }
}
