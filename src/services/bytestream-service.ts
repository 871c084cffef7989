import type * as grpc from '@grpc/grpc-js';
import type { BlobStore } from '../cas/blob-store.js';
import { compressChunks, isServed, SERVED_COMPRESSORS, ZstdDecoder } from '../cas/compression.js';
import type { UploadRegistry } from '../cas/upload-registry.js';
import type { InstancePolicy } from '../digest/instance-name.js';
import { parseReadResourceName, parseWriteResourceName, type ResourceName } from '../digest/resource-name.js';
import type { CompressionTally } from '../metrics/compression-metrics.js';
import { bytestream } from '../proto.js';
import type { Logger } from '../util/logger.js';
import { invalidArgument, notFound, outOfRange, unimplemented } from '../util/status-error.js';
import { clientStream, method, serverStream, unary } from './grpc-adapters.js';

const SERVICE = 'google.bytestream.ByteStream';

export const byteStreamDefinition = {
  Read: method(SERVICE, 'Read', bytestream.ReadRequest, bytestream.ReadResponse, { response: true }),
  Write: method(SERVICE, 'Write', bytestream.WriteRequest, bytestream.WriteResponse, { request: true }),
  QueryWriteStatus: method(SERVICE, 'QueryWriteStatus', bytestream.QueryWriteStatusRequest, bytestream.QueryWriteStatusResponse),
};

function requireServed(name: ResourceName, raw: string): void {
  if (!isServed(name.compressor)) {
    throw unimplemented(`resource name "${raw}": compressor ${name.compressor} is not supported (GetCapabilities lists ${SERVED_COMPRESSORS.join(', ')}); use "blobs/..." or "compressed-blobs/zstd/..."`);
  }
}

export interface ByteStreamOptions {
  instances: InstancePolicy;
  /** Counts compressed transfers (metrics), when given. */
  compression?: CompressionTally;
}

/**
 * ByteStream over the CAS. "compressed-blobs/zstd/…" names carry zstd data; offsets and sizes
 * in them are of the uncompressed blob, as REAPI says, except the write_offset of a Write's
 * later requests and its committed_size, which count compressed bytes from the first offset.
 */
export function byteStreamService(log: Logger, store: BlobStore, uploads: UploadRegistry, opts: ByteStreamOptions): grpc.UntypedServiceImplementation {
  return {
    Read: serverStream(log, 'Read', async (req: bytestream.ReadRequest, out) => {
      const name = parseReadResourceName(req.resourceName, opts.instances);
      requireServed(name, req.resourceName);
      const { digest } = name;
      const compressed = name.compressor !== 'identity';
      if (req.readLimit < 0) throw invalidArgument(`read_limit ${req.readLimit} is negative`, 'read_limit');
      if (compressed && req.readLimit !== 0) {
        throw invalidArgument(`read_limit ${req.readLimit} with "${req.resourceName}": compressed reads take no read_limit (REAPI), only read_offset`, 'read_limit');
      }
      // A missing blob is NOT_FOUND whatever the offset; only a present one is out of range.
      const inRange = req.readOffset >= 0 && req.readOffset <= digest.sizeBytes;
      const chunks = inRange ? await store.read(digest, req.readOffset, req.readLimit) : undefined;
      if (!chunks) {
        if (!inRange && (await store.findMissing([digest])).length === 0) {
          throw outOfRange(`read_offset ${req.readOffset} is outside blob ${digest} (0..${digest.sizeBytes})`);
        }
        throw notFound(`blob ${digest} not found`);
      }
      if (!compressed) {
        for await (const data of chunks) await out.write({ data });
        return;
      }
      let sent = 0;
      for await (const data of compressChunks(chunks)) {
        sent += data.byteLength;
        await out.write({ data });
      }
      opts.compression?.note(name.compressor, 'read', sent, digest.sizeBytes - req.readOffset);
    }),

    Write: clientStream(log, 'Write', async (requests: AsyncIterable<bytestream.WriteRequest>, ctx) => {
      let resourceName: string | undefined;
      let name: ResourceName | undefined;
      let lease: Awaited<ReturnType<UploadRegistry['acquire']>>;
      let decoder: ZstdDecoder | undefined;
      /** The write_offset the next request must carry. */
      let nextOffset = 0;
      let finishWrite = false;
      let committed = false;
      // The stream ended cleanly but short: grpc-js reports a client's cancel as a half-close
      // first (the 'cancelled' event comes a tick later), so this too keeps the bytes.
      let endedEarly = false;
      try {
        for await (const req of requests) {
          if (finishWrite) {
            // bytestream.proto: "Sending any WriteRequests subsequent to one in which finish_write is true will cause an error."
            throw invalidArgument(`a request for "${resourceName}" came after the one with finish_write: finish_write must be the last request of a Write`);
          }
          if (name === undefined) {
            resourceName = req.resourceName;
            name = parseWriteResourceName(resourceName, opts.instances);
            requireServed(name, resourceName);
            const size = name.digest.sizeBytes;
            // Already stored (or being stored by someone else just now): finish at once,
            // as the spec allows, with the full size (-1 for a compressed upload, as REAPI says).
            if ((await store.findMissing([name.digest])).length === 0) {
              committed = true;
              return { committedSize: name.compressor === 'identity' ? size : -1 };
            }
            const digest = name.digest;
            lease = await uploads.acquire(resourceName, req.writeOffset, () => store.beginWrite(digest));
            if (!lease) {
              throw invalidArgument(
                `write_offset ${req.writeOffset} for "${resourceName}" cannot be resumed: the server holds ${uploads.committed(resourceName) ?? 0} bytes of it (ask QueryWriteStatus)`,
                'write_offset',
              );
            }
            // A compressed Write starts (or resumes) at an offset into the uncompressed blob,
            // with a new zstd stream of the rest of it.
            if (name.compressor !== 'identity') decoder = new ZstdDecoder(size - req.writeOffset, `blob ${digest} (write_offset ${req.writeOffset})`);
            nextOffset = req.writeOffset;
          } else if (req.resourceName && req.resourceName !== resourceName) {
            throw invalidArgument(`resource_name changed within one Write stream: "${req.resourceName}" after "${resourceName}"`, 'resource_name');
          }
          const writer = lease!.writer;
          if (req.writeOffset !== nextOffset) {
            const sent = decoder ? `the first write_offset plus the ${decoder.compressedBytes} compressed bytes sent so far` : `the ${writer.written} bytes written so far`;
            throw invalidArgument(`write_offset ${req.writeOffset} for "${resourceName}", but the next request must carry ${nextOffset} (${sent})`, 'write_offset');
          }
          nextOffset += req.data.byteLength;
          if (decoder) {
            for (const piece of decoder.push(req.data)) await writer.write(piece);
          } else if (req.data.byteLength > 0) {
            await writer.write(req.data);
          }
          if (req.finishWrite) {
            if (decoder) for (const piece of decoder.end()) await writer.write(piece);
            finishWrite = true;
          }
        }
        if (resourceName === undefined) throw invalidArgument('Write stream carried no request: resource_name is required');
        if (!finishWrite) {
          endedEarly = true;
          throw invalidArgument(`Write stream for "${resourceName}" ended without finish_write after ${lease?.writer.written ?? 0} bytes`);
        }
        // The client has closed its side after finish_write: the blob becomes visible now.
        await lease!.writer.commit();
        committed = true;
        if (decoder) {
          opts.compression?.note(name!.compressor, 'write', decoder.compressedBytes, decoder.decompressedBytes);
          return { committedSize: nextOffset };
        }
        return { committedSize: lease!.writer.written };
      } finally {
        // A broken stream keeps its bytes for QueryWriteStatus and a resumed Write; an
        // upload refused for its content (bad hash, too much data) is thrown away.
        if (lease) await lease.release(!committed && (endedEarly || ctx.cancelled()));
      }
    }),

    QueryWriteStatus: unary(log, 'QueryWriteStatus', async (req: bytestream.QueryWriteStatusRequest) => {
      const name = parseWriteResourceName(req.resourceName, opts.instances);
      requireServed(name, req.resourceName);
      // Sizes here are of the uncompressed blob, for compressed uploads too: a resumed Write's
      // first write_offset is an uncompressed offset (REAPI), and this is what it must send.
      if ((await store.findMissing([name.digest])).length === 0) return { committedSize: name.digest.sizeBytes, complete: true };
      await uploads.settled(req.resourceName);
      const committed = uploads.committed(req.resourceName);
      if (committed === undefined) throw notFound(`no upload in progress for "${req.resourceName}"`);
      return { committedSize: committed, complete: false };
    }),
  };
}
