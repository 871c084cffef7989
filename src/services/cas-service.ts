import type * as grpc from '@grpc/grpc-js';
import type { BlobStore } from '../cas/blob-store.js';
import { readDirectory, directoryReferences } from '../cas/directory-walker.js';
import { Digest } from '../digest/digest.js';
import type { InstancePolicy } from '../digest/instance-name.js';
import { re } from '../proto.js';
import type { Logger } from '../util/logger.js';
import { Code, invalidArgument, notFound, StatusError, unimplemented } from '../util/status-error.js';
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
  /** GetTree: directories per page when the client sets no page_size, and the upper bound. */
  maxTreePageSize?: number;
  /** GetTree: deepest level walked, and most directories returned (limits.max-tree-*). */
  maxTreeDepth?: number;
  maxTreeDirectories?: number;
}

/** Bytes a response of GetTree carries at most (well under clients' 4 MiB receive limit). */
const TREE_RESPONSE_BYTES = 2 * 1024 * 1024;

export function casService(log: Logger, store: BlobStore, opts: CasServiceOptions): grpc.UntypedServiceImplementation {
  const maxPage = opts.maxTreePageSize ?? 10_000;
  return {
    FindMissingBlobs: unary(log, 'FindMissingBlobs', async (req: re.FindMissingBlobsRequest) => {
      opts.instances.parse(req.instanceName);
      const fnValue = req.digestFunction;
      const digests = req.blobDigests.map((d, i) => Digest.fromRequest(d, fnValue, `blob_digests[${i}]`));
      const missing = await store.findMissing(digests);
      return { missingBlobDigests: missing.map((d) => d.toProto()) };
    }),

    BatchUpdateBlobs: unary(log, 'BatchUpdateBlobs', async (req: re.BatchUpdateBlobsRequest) => {
      opts.instances.parse(req.instanceName);
      let total = 0;
      for (const r of req.requests) total += r.data?.byteLength ?? 0;
      if (total > opts.maxBatchBytes) {
        throw invalidArgument(
          `BatchUpdateBlobs carries ${total} bytes, more than max_batch_total_size_bytes (${opts.maxBatchBytes}); upload large blobs with ByteStream.Write`,
        );
      }
      const responses = await Promise.all(
        req.requests.map(async (r, i) => {
          try {
            const digest = Digest.fromRequest(r.digest, req.digestFunction, `requests[${i}].digest`);
            if (r.compressor) throw invalidArgument(`requests[${i}]: compressor ${r.compressor} is not supported (GetCapabilities lists none)`);
            await store.put(digest, r.data ?? new Uint8Array());
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
      const digests = req.digests.map((d, i) => Digest.fromRequest(d, req.digestFunction, `digests[${i}]`));
      const total = digests.reduce((n, d) => n + d.sizeBytes, 0);
      if (total > opts.maxBatchBytes) {
        throw invalidArgument(
          `BatchReadBlobs asks for ${total} bytes, more than max_batch_total_size_bytes (${opts.maxBatchBytes}); read large blobs with ByteStream.Read`,
        );
      }
      const responses = await Promise.all(
        digests.map(async (d) => {
          const data = await store.get(d);
          return data
            ? { digest: d.toProto(), data, status: OK_STATUS, compressor: 0 }
            : { digest: d.toProto(), status: { code: Code.NOT_FOUND, message: `blob ${d} not found` } };
        }),
      );
      return { responses };
    }),

    GetTree: serverStream(log, 'GetTree', async (req: re.GetTreeRequest, out) => {
      opts.instances.parse(req.instanceName);
      const root = Digest.fromRequest(req.rootDigest, req.digestFunction, 'root_digest');
      if (req.pageSize < 0) throw invalidArgument(`page_size ${req.pageSize} is negative`, 'page_size');
      let skip = 0;
      if (req.pageToken) {
        skip = Number(Buffer.from(req.pageToken, 'base64url').toString());
        if (!Number.isSafeInteger(skip) || skip < 0) throw invalidArgument(`page_token "${req.pageToken}" was not issued by this server`, 'page_token');
      }
      const pageSize = req.pageSize > 0 ? Math.min(req.pageSize, maxPage) : Infinity;
      // Missing subtrees are left out (the spec: return the portion present); a missing root is NOT_FOUND.
      if ((await store.findMissing([root])).length > 0) throw notFound(`root directory ${root} not found`);
      let index = 0;
      let sent = 0;
      let batch: re.IDirectory[] = [];
      let batchBytes = 0;
      const seen = new Set<string>([root.key]);
      let frontier = [root];
      let level = 0;
      while (frontier.length > 0) {
        if (opts.maxTreeDepth !== undefined && level++ > opts.maxTreeDepth) {
          throw invalidArgument(`the tree under ${root} is deeper than ${opts.maxTreeDepth} levels, the most this server walks (limits.max-tree-depth)`);
        }
        const next: Digest[] = [];
        for (const digest of frontier) {
          let directory: re.Directory;
          try {
            directory = await readDirectory(store, digest);
          } catch (err) {
            if (err instanceof StatusError && err.code === Code.FAILED_PRECONDITION) continue;
            throw err;
          }
          for (const child of directoryReferences(directory, digest.fn).directories) {
            if (!seen.has(child.key)) {
              seen.add(child.key);
              next.push(child);
              if (opts.maxTreeDirectories !== undefined && seen.size > opts.maxTreeDirectories) {
                throw invalidArgument(`the tree under ${root} has more than ${opts.maxTreeDirectories} directories, the most this server returns (limits.max-tree-entries)`);
              }
            }
          }
          if (index++ < skip) continue;
          if (sent >= pageSize) {
            await out.write({ directories: batch, nextPageToken: Buffer.from(String(skip + sent)).toString('base64url') });
            return;
          }
          batch.push(directory);
          batchBytes += digest.sizeBytes;
          sent++;
          if (batchBytes >= TREE_RESPONSE_BYTES) {
            await out.write({ directories: batch, nextPageToken: '' });
            batch = [];
            batchBytes = 0;
          }
        }
        frontier = next;
      }
      await out.write({ directories: batch, nextPageToken: '' });
    }),

    SplitBlob: unary(log, 'SplitBlob', async () => {
      throw unimplemented('SplitBlob is not supported by this server (GetCapabilities: split_blob_support=false)');
    }),
    SpliceBlob: unary(log, 'SpliceBlob', async () => {
      throw unimplemented('SpliceBlob is not supported by this server (GetCapabilities: splice_blob_support=false)');
    }),
  };
}

