import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { BlobStore } from '../cas/blob-store.js';
import { SHA256 } from '../digest/digest-function.js';
import type { Digest } from '../digest/digest.js';
import type { re } from '../proto.js';
import type { ReapiClients } from '../client/reapi-client.js';
import { Code, StatusError } from '../util/status-error.js';

/** What a transfer needs of the upstream: its CAS and ByteStream clients, instance, batch limit and URL (for messages). */
export interface UpstreamCas {
  readonly url: string;
  readonly instanceName: string;
  readonly clients: Pick<ReapiClients, 'cas' | 'byteStream'>;
  /** The upstream's max_batch_total_size_bytes (0: it set none). */
  maxBatchBytes(): number;
}

/** What a batch holds besides the blobs' bytes (per entry: digest, status, framing), counted generously. */
const ENTRY_OVERHEAD = 256;
/** A batch when the upstream sets no limit: what fits in gRPC's default 4 MiB receive limit. */
const DEFAULT_BATCH = 4 * 1024 * 1024 - 64 * 1024;
/** FindMissingBlobs requests hold at most this many digests (well under 4 MiB). */
const FIND_MISSING_CHUNK = 10_000;
/** ByteStream chunks, as clients send them. */
const CHUNK = 1024 * 1024;
/** Unary calls to the upstream give up after this long. */
export const RPC_TIMEOUT_MS = 60_000;

const deadline = (ms = RPC_TIMEOUT_MS): grpc.CallOptions => ({ deadline: Date.now() + ms });

function unary<Res>(client: grpc.Client & Record<string, any>, method: string, request: unknown, signal?: AbortSignal): Promise<Res> {
  return new Promise((resolve, reject) => {
    const c = client[method](request, new grpc.Metadata(), deadline(), (err: grpc.ServiceError | null, res: Res) => (err ? reject(err) : resolve(res)));
    signal?.addEventListener('abort', () => c.cancel(), { once: true });
  });
}

/** An upstream call's failure as a status naming the upstream. */
export function upstreamError(url: string, what: string, err: unknown): StatusError {
  if (err instanceof StatusError) return err;
  const e = err as grpc.ServiceError;
  const code = typeof e.code === 'number' ? e.code : Code.UNAVAILABLE;
  // A deadline on a call to the upstream means it did not answer: for our client it is unavailable.
  const mapped = code === Code.DEADLINE_EXCEEDED ? Code.UNAVAILABLE : code;
  return new StatusError(mapped, `upstream ${url}: ${what} failed: ${e.details || e.message}`);
}

function batchLimit(up: UpstreamCas): number {
  const l = up.maxBatchBytes();
  return l > 0 ? l : DEFAULT_BATCH;
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
  return `${up.instanceName ? `${up.instanceName}/` : ''}${upload ? `uploads/${randomUUID()}/` : ''}blobs/${fn}${d.hash}/${d.sizeBytes}`;
}

/** The digests among `digests` the upstream lacks. */
export async function upstreamMissing(up: UpstreamCas, digests: readonly Digest[], signal?: AbortSignal): Promise<Digest[]> {
  const missing: Digest[] = [];
  const nonEmpty = digests.filter((d) => !d.isEmpty);
  for (let i = 0; i < nonEmpty.length; i += FIND_MISSING_CHUNK) {
    const chunk = nonEmpty.slice(i, i + FIND_MISSING_CHUNK);
    let res: re.IFindMissingBlobsResponse;
    try {
      res = await unary(up.clients.cas, 'FindMissingBlobs', { instanceName: up.instanceName, blobDigests: chunk.map((d) => d.toProto()), digestFunction: chunk[0]!.fn.value }, signal);
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
      res = await unary(up.clients.cas, 'BatchUpdateBlobs', { instanceName: up.instanceName, requests, digestFunction: batch[0]!.fn.value }, signal);
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
  await new Promise<void>((resolve, reject) => {
    const call: grpc.ClientWritableStream<unknown> = (up.clients.byteStream as grpc.Client & Record<string, any>)['Write'](new grpc.Metadata(), {}, (err: grpc.ServiceError | null, res: { committedSize?: number | string }) => {
      if (err) return reject(upstreamError(up.url, `ByteStream.Write of ${d}`, err));
      if (Number(res?.committedSize ?? 0) !== d.sizeBytes && d.sizeBytes > 0) return reject(new StatusError(Code.UNAVAILABLE, `upstream ${up.url} committed ${res?.committedSize} of the ${d.sizeBytes} bytes of ${d}`));
      resolve();
    });
    const onAbort = (): void => call.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    const name = resourceName(up, d, true);
    void (async () => {
      let offset = 0;
      let pending: Buffer = Buffer.alloc(0);
      const send = async (data: Buffer, last: boolean): Promise<void> => {
        const ok = call.write({ resourceName: offset === 0 ? name : '', writeOffset: offset, data, finishWrite: last });
        offset += data.byteLength;
        if (!ok) await new Promise((r) => call.once('drain', r));
      };
      try {
        for await (const chunk of source) {
          pending = pending.byteLength ? Buffer.concat([pending, Buffer.from(chunk)]) : Buffer.from(chunk);
          while (pending.byteLength > CHUNK) {
            await send(pending.subarray(0, CHUNK), false);
            pending = pending.subarray(CHUNK);
          }
        }
        await send(pending, true);
        call.end();
      } catch (err) {
        call.cancel();
        reject(err);
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    })();
  });
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
      res = await unary(up.clients.cas, 'BatchReadBlobs', { instanceName: up.instanceName, digests: batch.map((d) => d.toProto()), digestFunction: batch[0]!.fn.value }, signal);
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
  const call: grpc.ClientReadableStream<{ data: Uint8Array }> = (up.clients.byteStream as grpc.Client & Record<string, any>)['Read']({ resourceName: resourceName(up, d, false), readOffset: 0, readLimit: 0 });
  const onAbort = (): void => call.cancel();
  signal?.addEventListener('abort', onAbort, { once: true });
  const writer = await local.beginWrite(d, { signal });
  try {
    for await (const msg of call) await writer.write(Buffer.from(msg.data));
    await writer.commit();
  } catch (err) {
    await writer.abort();
    if ((err as grpc.ServiceError).code === Code.NOT_FOUND) throw lost(d);
    throw upstreamError(up.url, `ByteStream.Read of ${d}`, err);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
