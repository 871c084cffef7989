import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { FIND_MISSING_CHUNK, type BlobStore, type BlobWriter, type StoreCallOptions } from '../cas/blob-store.js';
import type { Digest } from '../digest/digest.js';
import type { re } from '../proto.js';
import { UpstreamError, type UpstreamConnection } from './upstream-connection.js';

/** Digest functions whose resource names carry no function segment (REAPI ByteStream rules). */
const INFERRED_FUNCTIONS = new Set(['sha256', 'sha1', 'md5', 'sha384', 'sha512', 'vso', 'murmur3']);
/** ByteStream chunk size for uploads. */
const CHUNK = 1024 * 1024;
/** Our own cap on one batch, below the upstream's when it advertises one. */
const OWN_BATCH_MAX = 4 * 1024 * 1024 - 64 * 1024;

/**
 * The upstream's CAS over REAPI, through the UpstreamConnection (deadlines, health, errors
 * naming it). A BlobStore for reading (FindMissing, get, read), so the completeness check can
 * run on the upstream; uploads go through `upload`, fed from the local store, never `put`.
 */
export class UpstreamCas implements BlobStore {
  constructor(private readonly conn: UpstreamConnection) {}

  /** Whether the upstream handles digests of this function (the capabilities it announced). */
  supports(d: Digest): boolean {
    const fns = this.conn.capabilities?.digestFunctions;
    return !fns || fns.includes(d.fn.name);
  }

  /** Largest batch (blob bytes) worth sending to the upstream. */
  get batchMax(): number {
    const theirs = this.conn.capabilities?.maxBatchTotalSizeBytes ?? 0;
    // Room for the framing of each entry: a quarter of a small limit, 64 KiB of a large one.
    return theirs > 0 ? Math.min(OWN_BATCH_MAX, theirs - Math.min(64 * 1024, Math.floor(theirs / 4))) : OWN_BATCH_MAX;
  }

  private resource(d: Digest): string {
    const fn = INFERRED_FUNCTIONS.has(d.fn.name) ? '' : `${d.fn.name}/`;
    return `blobs/${fn}${d.hash}/${d.sizeBytes}`;
  }

  private prefix(): string {
    return this.conn.instance ? `${this.conn.instance}/` : '';
  }

  async findMissing(digests: readonly Digest[], options: StoreCallOptions = {}): Promise<Digest[]> {
    const missing: Digest[] = [];
    const byFn = new Map<number, Digest[]>();
    for (const d of digests) byFn.set(d.fn.value, [...(byFn.get(d.fn.value) ?? []), d]);
    for (const [fnValue, list] of byFn) {
      for (let i = 0; i < list.length; i += FIND_MISSING_CHUNK) {
        const chunk = list.slice(i, i + FIND_MISSING_CHUNK);
        const res = await this.conn.unary<re.IFindMissingBlobsResponse>(
          'cas',
          'FindMissingBlobs',
          { instanceName: this.conn.instance, blobDigests: chunk.map((d) => d.toProto()), digestFunction: fnValue },
          { signal: options.signal },
        );
        const gone = new Set((res.missingBlobDigests ?? []).map((d) => `${d.hash}/${Number(d.sizeBytes)}`));
        missing.push(...chunk.filter((d) => gone.has(`${d.hash}/${d.sizeBytes}`)));
      }
    }
    return missing;
  }

  /** Small blobs in one BatchReadBlobs (the caller keeps them within batchMax); absent ones are left out. */
  async batchRead(digests: readonly Digest[], options: StoreCallOptions = {}): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>();
    if (digests.length === 0) return out;
    const res = await this.conn.unary<re.IBatchReadBlobsResponse>(
      'cas',
      'BatchReadBlobs',
      { instanceName: this.conn.instance, digests: digests.map((d) => d.toProto()), digestFunction: digests[0]!.fn.value },
      { signal: options.signal },
    );
    for (const r of res.responses ?? []) {
      const code = r.status?.code ?? 0;
      if (code === grpc.status.NOT_FOUND) continue;
      if (code !== 0) throw new UpstreamError(code, `upstream ${this.conn.url}: BatchReadBlobs: ${r.digest?.hash}/${r.digest?.sizeBytes}: ${r.status?.message}`);
      if (r.digest?.hash) out.set(`${r.digest.hash}/${Number(r.digest.sizeBytes)}`, Buffer.from(r.data ?? new Uint8Array()));
    }
    return out;
  }

  async get(digest: Digest, options: StoreCallOptions = {}): Promise<Buffer | undefined> {
    if (digest.sizeBytes <= this.batchMax) return (await this.batchRead([digest], options)).get(`${digest.hash}/${digest.sizeBytes}`);
    const stream = await this.read(digest, 0, 0, options);
    if (!stream) return undefined;
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(Buffer.from(c));
    return Buffer.concat(chunks);
  }

  /** A blob streamed over ByteStream.Read; undefined when the upstream lacks it. */
  async read(digest: Digest, offset: number, limit: number, options: StoreCallOptions = {}): Promise<AsyncIterable<Uint8Array> | undefined> {
    const stream = this.conn.serverStream<{ data: Uint8Array }>('byteStream', 'Read', { resourceName: `${this.prefix()}${this.resource(digest)}`, readOffset: offset, readLimit: limit }, { signal: options.signal });
    // The first message (or NOT_FOUND) tells whether it is there.
    let first: IteratorResult<{ data: Uint8Array }>;
    try {
      first = await stream.next();
    } catch (err) {
      if (err instanceof UpstreamError && err.code === grpc.status.NOT_FOUND) return undefined;
      throw err;
    }
    return (async function* () {
      if (first.done) return;
      yield first.value.data;
      for await (const m of { [Symbol.asyncIterator]: () => stream }) yield m.data;
    })();
  }

  put(digest: Digest): Promise<void> {
    return Promise.reject(new Error(`the upstream CAS is written through upload(), not put (${digest})`));
  }

  beginWrite(digest: Digest): Promise<BlobWriter> {
    return Promise.reject(new Error(`the upstream CAS is written through upload(), not beginWrite (${digest})`));
  }

  /** Upload small blobs in one BatchUpdateBlobs; a per-blob failure is an error naming the blob. */
  async batchUpload(blobs: ReadonlyArray<{ digest: Digest; data: Uint8Array }>): Promise<void> {
    if (blobs.length === 0) return;
    const res = await this.conn.unary<re.IBatchUpdateBlobsResponse>('cas', 'BatchUpdateBlobs', {
      instanceName: this.conn.instance,
      requests: blobs.map((b) => ({ digest: b.digest.toProto(), data: b.data })),
      digestFunction: blobs[0]!.digest.fn.value,
    });
    const failed = (res.responses ?? []).filter((r) => (r.status?.code ?? 0) !== 0);
    if (failed.length) {
      const f = failed[0]!;
      throw new UpstreamError(f.status!.code!, `upstream ${this.conn.url}: BatchUpdateBlobs refused ${failed.length} blob(s), e.g. ${f.digest?.hash}/${f.digest?.sizeBytes}: ${f.status?.message}`);
    }
  }

  /** Stream one blob up with ByteStream.Write, read chunk by chunk from `source` (bounded memory). */
  async streamUpload(digest: Digest, source: AsyncIterable<Uint8Array>): Promise<void> {
    const name = `${this.prefix()}uploads/${randomUUID()}/${this.resource(digest)}`;
    async function* messages(): AsyncGenerator<{ resourceName?: string; writeOffset: number; data: Uint8Array; finishWrite: boolean }> {
      let offset = 0;
      let pending: Buffer = Buffer.alloc(0);
      let first = true;
      for await (const chunk of source) {
        pending = pending.length ? Buffer.concat([pending, chunk]) : Buffer.from(chunk);
        while (pending.length >= CHUNK) {
          const data = pending.subarray(0, CHUNK);
          pending = pending.subarray(CHUNK);
          const last = offset + data.length === digest.sizeBytes;
          yield { ...(first ? { resourceName: name } : {}), writeOffset: offset, data, finishWrite: last };
          first = false;
          offset += data.length;
          if (last) return;
        }
      }
      if (offset + pending.length !== digest.sizeBytes) throw new Error(`local blob ${digest} ended after ${offset + pending.length} bytes`);
      yield { ...(first ? { resourceName: name } : {}), writeOffset: offset, data: pending, finishWrite: true };
    }
    const res = await this.conn.clientStream<unknown, { committedSize?: number | Long }>('byteStream', 'Write', messages());
    const committed = Number(res.committedSize ?? 0);
    // -1 (or the full size) after an early "already there" is fine; anything else is not.
    if (committed !== digest.sizeBytes && committed !== -1) throw new UpstreamError(grpc.status.DATA_LOSS, `upstream ${this.conn.url}: ByteStream.Write of ${digest} committed ${committed} bytes`);
  }
}

type Long = { toNumber(): number };
