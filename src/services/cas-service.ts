import type * as grpc from '@grpc/grpc-js';
import type { BlobStore } from '../cas/blob-store.js';
import { compressBlob, compressorOfValue, COMPRESSOR_VALUES, decompressBlob, isServed, SERVED_COMPRESSORS } from '../cas/compression.js';
import { walkDirectories } from '../cas/directory-walker.js';
import { DEFAULT_TREE_PAGE_DIRECTORIES, parseTreePageToken, TREE_PAGE_BYTES, TreePager } from '../cas/tree-pages.js';
import { Digest } from '../digest/digest.js';
import { digestFunctionFromValue } from '../digest/digest-function.js';
import type { CompressionTally } from '../metrics/compression-metrics.js';
import type { InstancePolicy } from '../digest/instance-name.js';
import { re } from '../proto.js';
import type { Logger } from '../util/logger.js';
import { Code, invalidArgument, notFound, unimplemented } from '../util/status-error.js';
import { errorToRpcStatus } from '../util/rpc-status.js';
import { method, OK_STATUS, serverStream, unary } from './grpc-adapters.js';

const SERVICE = 'build.bazel.remote.execution.v2.ContentAddressableStorage';

export const casDefinition = {
  FindMissingBlobs: method(SERVICE, 'FindMissingBlobs', re.FindMissingBlobsRequest, re.FindMissingBlobsResponse),
  BatchUpdateBlobs: method(SERVICE, 'BatchUpdateBlobs', re.BatchUpdateBlobsRequest, re.BatchUpdateBlobsResponse),
  BatchReadBlobs: method(SERVICE, 'BatchReadBlobs', re.BatchReadBlobsRequest, re.BatchReadBlobsResponse),
  GetTree: method(SERVICE, 'GetTree', re.GetTreeRequest, re.GetTreeResponse, { response: true }),
  SplitBlob: method(SERVICE, 'SplitBlob', re.SplitBlobRequest, re.SplitBlobResponse),
  SpliceBlob: method(SERVICE, 'SpliceBlob', re.SpliceBlobRequest, re.SpliceBlobResponse),
};

export interface CasServiceOptions {
  instances: InstancePolicy;
  maxBatchBytes: number;
  /** GetTree: directories per page at most (the default page size when the client sets none). */
  maxTreePageSize?: number;
  /** GetTree: deepest level walked, and most directories returned (limits.max-tree-*). */
  maxTreeDepth?: number;
  maxTreeDirectories?: number;
  /** Counts compressed batch entries (metrics), when given. */
  compression?: CompressionTally;
}

/**
 * A response must fit in what a client receives: gRPC's default 4 MiB unless the server's
 * batch limit is set so high that its clients must have raised theirs. Per-blob framing (a
 * digest and a status, ~80 bytes) comes on top of the blob bytes that max_batch_total_size_bytes
 * counts, and many tiny blobs can add up to more than the room the advertised limit leaves.
 */
export const CLIENT_RECEIVE_LIMIT = 4 * 1024 * 1024;
export const BATCH_FRAMING_ROOM = 64 * 1024;
/** Blobs smaller than this are sent as they are when a client accepts zstd: a frame costs more than it saves. */
const MIN_COMPRESSED_BATCH_BLOB = 256;

export function casService(log: Logger, store: BlobStore, opts: CasServiceOptions): grpc.UntypedServiceImplementation {
  const maxPage = opts.maxTreePageSize ?? DEFAULT_TREE_PAGE_DIRECTORIES;
  const responseLimit = Math.max(CLIENT_RECEIVE_LIMIT, opts.maxBatchBytes + BATCH_FRAMING_ROOM);
  return {
    FindMissingBlobs: unary(log, 'FindMissingBlobs', async (req: re.FindMissingBlobsRequest) => {
      opts.instances.parse(req.instanceName);
      const fnValue = req.digestFunction;
      // No per-digest status here: a malformed digest fails the call, naming which one.
      const digests = req.blobDigests.map((d, i) => Digest.fromRequest(d, fnValue, `blob_digests[${i}]`));
      const missing = await store.findMissing(digests);
      return { missingBlobDigests: missing.map((d) => d.toProto()) };
    }),

    BatchUpdateBlobs: unary(log, 'BatchUpdateBlobs', async (req: re.BatchUpdateBlobsRequest) => {
      opts.instances.parse(req.instanceName);
      if (req.digestFunction) digestFunctionFromValue(req.digestFunction);
      // The limit counts blob sizes: the digests' (uncompressed) sizes, or the data when larger.
      let total = 0;
      for (const r of req.requests) total += Math.max(r.data?.byteLength ?? 0, Math.max(0, Number(r.digest?.sizeBytes ?? 0)) || 0);
      if (total > opts.maxBatchBytes) {
        throw invalidArgument(
          `BatchUpdateBlobs carries ${total} bytes of blobs, more than max_batch_total_size_bytes (${opts.maxBatchBytes}); upload large blobs with ByteStream.Write`,
        );
      }
      const responses = await Promise.all(
        req.requests.map(async (r, i) => {
          try {
            const digest = Digest.fromRequest(r.digest, req.digestFunction, `requests[${i}].digest`);
            const compressor = compressorOfValue(r.compressor);
            if (!compressor || !isServed(compressor)) {
              throw invalidArgument(`requests[${i}]: compressor ${r.compressor} is not supported (supported_batch_update_compressors: ${SERVED_COMPRESSORS.join(', ')})`);
            }
            let data = r.data ?? new Uint8Array();
            if (compressor !== 'identity') {
              const compressed = data.byteLength;
              data = decompressBlob(data, digest.sizeBytes, `requests[${i}]: blob ${digest}`);
              opts.compression?.note(compressor, 'write', compressed, data.byteLength);
            }
            await store.put(digest, data);
            return { digest: r.digest, status: OK_STATUS };
          } catch (err) {
            return { digest: r.digest, status: errorToRpcStatus(err) };
          }
        }),
      );
      return { responses };
    }),

    BatchReadBlobs: unary(log, 'BatchReadBlobs', async (req: re.BatchReadBlobsRequest) => {
      opts.instances.parse(req.instanceName);
      if (req.digestFunction) digestFunctionFromValue(req.digestFunction);
      // A malformed digest is that entry's INVALID_ARGUMENT; the others are served.
      const entries = req.digests.map((d, i) => {
        try {
          return { digest: Digest.fromRequest(d, req.digestFunction, `digests[${i}]`) };
        } catch (err) {
          return { asked: d, error: err };
        }
      });
      const total = entries.reduce((n, e) => n + (e.digest?.sizeBytes ?? 0), 0);
      if (total > opts.maxBatchBytes) {
        throw invalidArgument(
          `BatchReadBlobs asks for ${total} bytes, more than max_batch_total_size_bytes (${opts.maxBatchBytes}); read large blobs with ByteStream.Read`,
        );
      }
      // IDENTITY is always acceptable; zstd when the client lists it.
      const zstd = req.acceptableCompressors.includes(COMPRESSOR_VALUES.zstd);
      const responses: re.BatchReadBlobsResponse.IResponse[] = await Promise.all(
        entries.map(async (e) => {
          const d = e.digest;
          if (!d) return { digest: e.asked, status: errorToRpcStatus(e.error) };
          const data = await store.get(d);
          if (!data) return { digest: d.toProto(), status: { code: Code.NOT_FOUND, message: `blob ${d} not found` } };
          if (zstd && data.byteLength >= MIN_COMPRESSED_BATCH_BLOB) {
            const compressed = await compressBlob(data);
            // Incompressible data goes as it is: the client accepts identity too.
            if (compressed.byteLength < data.byteLength) {
              opts.compression?.note('zstd', 'read', compressed.byteLength, data.byteLength);
              return { digest: d.toProto(), data: compressed, compressor: COMPRESSOR_VALUES.zstd, status: OK_STATUS };
            }
          }
          return { digest: d.toProto(), data, status: OK_STATUS };
        }),
      );
      const size = re.BatchReadBlobsResponse.encode({ responses }).len;
      if (size > responseLimit) {
        throw invalidArgument(
          `BatchReadBlobs of ${entries.length} blobs would answer ${size} bytes with their framing, more than the ${responseLimit} a client receives; ask for fewer blobs per call, or read large ones with ByteStream.Read`,
        );
      }
      return { responses };
    }),

    GetTree: serverStream(log, 'GetTree', async (req: re.GetTreeRequest, out) => {
      opts.instances.parse(req.instanceName);
      const root = Digest.fromRequest(req.rootDigest, req.digestFunction, 'root_digest');
      if (req.pageSize < 0) throw invalidArgument(`page_size ${req.pageSize} is negative`, 'page_size');
      const skip = req.pageToken ? parseTreePageToken(req.pageToken, root) : 0;
      // Missing subtrees are left out (the spec: return the portion present); a missing root is NOT_FOUND.
      if ((await store.findMissing([root])).length > 0) throw notFound(`root directory ${root} not found`);
      const pages = new TreePager(root, skip, {
        maxDirectories: req.pageSize > 0 ? Math.min(req.pageSize, maxPage) : maxPage,
        maxBytes: TREE_PAGE_BYTES,
      });
      const walk = walkDirectories(store, root, {
        skipMissing: true,
        maxDepth: opts.maxTreeDepth,
        maxDirectories: opts.maxTreeDirectories,
        tooLarge: (limit, value) =>
          limit === 'depth'
            ? invalidArgument(`the tree under ${root} is deeper than ${value} levels, the most this server walks (limits.max-tree-depth)`)
            : invalidArgument(`the tree under ${root} has more than ${value} directories, the most this server returns (limits.max-tree-entries)`),
      });
      for await (const { directory, digest } of walk) {
        const full = pages.add(directory, digest.sizeBytes);
        if (full) await out.write(full);
      }
      await out.write(pages.last());
    }),

    SplitBlob: unary(log, 'SplitBlob', async () => {
      throw unimplemented('SplitBlob is not supported by this server (GetCapabilities: split_blob_support=false)');
    }),
    SpliceBlob: unary(log, 'SpliceBlob', async () => {
      throw unimplemented('SpliceBlob is not supported by this server (GetCapabilities: splice_blob_support=false)');
    }),
  };
}

