import type * as grpc from '@grpc/grpc-js';
import type { BlobStore } from '../cas/blob-store.js';
import type { Digest } from '../digest/digest.js';
import { Code, StatusError } from '../util/status-error.js';
import type { UpstreamCas } from './upstream-cas.js';
import { UpstreamError } from './upstream-connection.js';

/**
 * Blobs moved between the local store and the upstream for a forwarded action: its input
 * closure up, its outputs down. Batches within the upstream's limit, ByteStream for blobs too
 * big for one; the calls go through the upstream connection (deadlines, health).
 */

/** What a batch holds besides the blobs' bytes (per entry: digest, status, framing), counted generously. */
const ENTRY_OVERHEAD = 256;

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

/** Split digests into batches within `limit`; blobs too big for a batch go through ByteStream. */
function plan(limit: number, digests: readonly Digest[]): { batches: Digest[][]; streams: Digest[] } {
  const batches: Digest[][] = [];
  const streams: Digest[] = [];
  let batch: Digest[] = [];
  let bytes = 0;
  for (const d of digests) {
    if (d.isEmpty) continue;
    const size = d.sizeBytes + ENTRY_OVERHEAD;
    if (size > limit) {
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

const evicted = (url: string, d: Digest): StatusError =>
  new StatusError(Code.FAILED_PRECONDITION, `blob ${d} is not in the local store any more (evicted?): it cannot be sent to upstream ${url}; upload it again`);

/** Make the upstream hold `digests`: FindMissingBlobs there, then what it lacks from `local`. Returns the bytes sent. */
export async function sendToUpstream(url: string, upstream: UpstreamCas, local: BlobStore, digests: readonly Digest[], signal?: AbortSignal): Promise<number> {
  let missing: Digest[];
  try {
    missing = await upstream.findMissing(digests.filter((d) => !d.isEmpty), { signal });
  } catch (err) {
    throw upstreamError(url, 'FindMissingBlobs', err);
  }
  const { batches, streams } = plan(upstream.batchMax, missing);
  let sent = 0;
  for (const batch of batches) {
    const blobs = await Promise.all(
      batch.map(async (digest) => {
        const data = await local.get(digest, { signal });
        if (!data) throw evicted(url, digest);
        return { digest, data };
      }),
    );
    try {
      await upstream.batchUpload(blobs);
    } catch (err) {
      throw upstreamError(url, `BatchUpdateBlobs of ${batch.length} blob(s)`, err);
    }
    sent += batch.reduce((n, d) => n + d.sizeBytes, 0);
  }
  for (const d of streams) {
    const source = await local.read(d, 0, 0, { signal });
    if (!source) throw evicted(url, d);
    try {
      await upstream.streamUpload(d, source);
    } catch (err) {
      throw upstreamError(url, `ByteStream.Write of ${d}`, err);
    }
    sent += d.sizeBytes;
  }
  return sent;
}

/**
 * Copy `digests` the local store lacks from the upstream into it (through its checks: a blob
 * that does not match its digest is refused). A blob the upstream lacks is an error naming it.
 * Returns the bytes received.
 */
export async function fetchFromUpstream(url: string, upstream: UpstreamCas, local: BlobStore, digests: readonly Digest[], signal?: AbortSignal): Promise<number> {
  const unique = [...new Map(digests.filter((d) => !d.isEmpty).map((d) => [d.key, d])).values()];
  const missing = unique.length > 0 ? await local.findMissing(unique, { signal }) : [];
  const lost = (d: Digest): StatusError => new StatusError(Code.UNAVAILABLE, `upstream ${url} returned a result whose blob ${d} it does not hold (evicted there?); run the action again`);
  const { batches, streams } = plan(upstream.batchMax, missing);
  let received = 0;
  for (const batch of batches) {
    let got: Map<string, Buffer>;
    try {
      got = await upstream.batchRead(batch, { signal });
    } catch (err) {
      throw upstreamError(url, `BatchReadBlobs of ${batch.length} blob(s)`, err);
    }
    for (const d of batch) {
      const data = got.get(`${d.hash}/${d.sizeBytes}`);
      if (!data) throw lost(d);
      await local.put(d, data, { signal });
      received += d.sizeBytes;
    }
  }
  for (const d of streams) {
    let source: AsyncIterable<Uint8Array> | undefined;
    try {
      source = await upstream.read(d, 0, 0, { signal });
    } catch (err) {
      throw upstreamError(url, `ByteStream.Read of ${d}`, err);
    }
    if (!source) throw lost(d);
    const writer = await local.beginWrite(d, { signal });
    try {
      for await (const chunk of source) await writer.write(chunk);
      await writer.commit();
    } catch (err) {
      await writer.abort();
      throw upstreamError(url, `ByteStream.Read of ${d}`, err);
    }
    received += d.sizeBytes;
  }
  return received;
}
