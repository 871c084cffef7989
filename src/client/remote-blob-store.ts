import * as grpc from '@grpc/grpc-js';
import type { BlobStore, BlobWriter } from '../cas/blob-store.js';
import { SHA256 } from '../digest/digest-function.js';
import type { Digest } from '../digest/digest.js';
import type { re } from '../proto.js';
import { call, type ReapiClients } from './reapi-client.js';

/** Blobs up to this size come through BatchReadBlobs, larger ones through ByteStream. */
const BATCH_MAX = 2 * 1024 * 1024;

/**
 * A daemon's CAS over REAPI, read-only: what `reexec shell` stages an input root from with
 * the workers' own stager, on the CLI's side. It cannot write: nothing the shell does reaches
 * the store.
 */
export class RemoteBlobStore implements BlobStore {
  constructor(
    private readonly clients: Pick<ReapiClients, 'cas' | 'byteStream'>,
    private readonly instance = '',
  ) {}

  private resourceName(d: Digest): string {
    const fn = d.fn === SHA256 ? '' : `${d.fn.name}/`;
    return `${this.instance ? `${this.instance}/` : ''}blobs/${fn}${d.hash}/${d.sizeBytes}`;
  }

  async findMissing(digests: readonly Digest[]): Promise<Digest[]> {
    const missing: Digest[] = [];
    for (let i = 0; i < digests.length; i += 10_000) {
      const chunk = digests.slice(i, i + 10_000);
      if (chunk.length === 0) continue;
      const res = await call<unknown, re.IFindMissingBlobsResponse>(this.clients.cas, 'FindMissingBlobs', {
        instanceName: this.instance,
        blobDigests: chunk.map((d) => d.toProto()),
        digestFunction: chunk[0]!.fn.value,
      });
      const gone = new Set((res.missingBlobDigests ?? []).map((d) => `${d.hash}/${Number(d.sizeBytes)}`));
      missing.push(...chunk.filter((d) => gone.has(d.toString())));
    }
    return missing;
  }

  async get(digest: Digest): Promise<Buffer | undefined> {
    if (digest.sizeBytes <= BATCH_MAX) {
      const res = await call<unknown, re.IBatchReadBlobsResponse>(this.clients.cas, 'BatchReadBlobs', {
        instanceName: this.instance,
        digests: [digest.toProto()],
        digestFunction: digest.fn.value,
      });
      const r = res.responses?.[0];
      if (!r || (r.status?.code ?? 0) === grpc.status.NOT_FOUND) return undefined;
      if (r.status?.code) throw new Error(`reading ${digest} failed: ${r.status.message}`);
      return Buffer.from(r.data ?? new Uint8Array());
    }
    const stream = await this.read(digest, 0, 0);
    if (!stream) return undefined;
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(Buffer.from(c));
    return Buffer.concat(chunks);
  }

  async read(digest: Digest, offset: number, limit: number): Promise<AsyncIterable<Uint8Array> | undefined> {
    const stream: grpc.ClientReadableStream<{ data: Uint8Array }> = (this.clients.byteStream as grpc.Client & Record<string, any>)['Read']({ resourceName: this.resourceName(digest), readOffset: offset, readLimit: limit });
    const iterator = stream[Symbol.asyncIterator]();
    // The first message (or NOT_FOUND) tells whether the blob is there.
    let first: IteratorResult<{ data: Uint8Array }>;
    try {
      first = await iterator.next();
    } catch (err) {
      if ((err as grpc.ServiceError).code === grpc.status.NOT_FOUND) return undefined;
      throw err;
    }
    return (async function* () {
      if (first.done) return;
      yield first.value.data;
      for (;;) {
        const n = await iterator.next();
        if (n.done) return;
        yield n.value.data;
      }
    })();
  }

  put(digest: Digest): Promise<void> {
    return Promise.reject(new Error(`this store is read-only (refused to write ${digest})`));
  }

  beginWrite(digest: Digest): Promise<BlobWriter> {
    return Promise.reject(new Error(`this store is read-only (refused to write ${digest})`));
  }
}
