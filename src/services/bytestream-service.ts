import type * as grpc from '@grpc/grpc-js';
import type { BlobStore } from '../cas/blob-store.js';
import type { UploadRegistry } from '../cas/upload-registry.js';
import type { InstancePolicy } from '../digest/instance-name.js';
import { parseReadResourceName, parseWriteResourceName, type ResourceName } from '../digest/resource-name.js';
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

function requireIdentity(name: ResourceName, raw: string): void {
  if (name.compressor !== 'identity') {
    throw unimplemented(`resource name "${raw}": compressor ${name.compressor} is not supported (GetCapabilities lists none); use "blobs/..."`);
  }
}

export function byteStreamService(
  log: Logger,
  store: BlobStore,
  uploads: UploadRegistry,
  opts: { instances: InstancePolicy },
): grpc.UntypedServiceImplementation {
  return {
    Read: serverStream(log, 'Read', async (req: bytestream.ReadRequest, out) => {
      const name = parseReadResourceName(req.resourceName, opts.instances);
      requireIdentity(name, req.resourceName);
      const { digest } = name;
      if (req.readOffset < 0 || req.readOffset > digest.sizeBytes) {
        throw outOfRange(`read_offset ${req.readOffset} is outside blob ${digest} (0..${digest.sizeBytes})`);
      }
      if (req.readLimit < 0) throw invalidArgument(`read_limit ${req.readLimit} is negative`, 'read_limit');
      const chunks = await store.read(digest, req.readOffset, req.readLimit);
      if (!chunks) throw notFound(`blob ${digest} not found`);
      for await (const data of chunks) await out.write({ data });
    }),

    Write: clientStream(log, 'Write', async (requests: AsyncIterable<bytestream.WriteRequest>, ctx) => {
      let resourceName: string | undefined;
      let lease: Awaited<ReturnType<UploadRegistry['acquire']>>;
      let finished = false;
      // The stream ended cleanly but short: grpc-js reports a client's cancel as a half-close
      // first (the 'cancelled' event comes a tick later), so this too keeps the bytes.
      let endedEarly = false;
      try {
        for await (const req of requests) {
          if (resourceName === undefined) {
            resourceName = req.resourceName;
            const name = parseWriteResourceName(resourceName, opts.instances);
            requireIdentity(name, resourceName);
            const size = name.digest.sizeBytes;
            // Already stored (or being stored by someone else just now): finish at once,
            // as the spec allows, with the full size.
            if ((await store.findMissing([name.digest])).length === 0) {
              finished = true;
              return { committedSize: size };
            }
            lease = await uploads.acquire(resourceName, req.writeOffset, () => store.beginWrite(name.digest));
            if (!lease) {
              throw invalidArgument(
                `write_offset ${req.writeOffset} for "${resourceName}" cannot be resumed: the server holds ${uploads.committed(resourceName) ?? 0} bytes of it (ask QueryWriteStatus)`,
                'write_offset',
              );
            }
          } else if (req.resourceName && req.resourceName !== resourceName) {
            throw invalidArgument(`resource_name changed within one Write stream: "${req.resourceName}" after "${resourceName}"`, 'resource_name');
          }
          const writer = lease!.writer;
          if (req.writeOffset !== writer.written) {
            throw invalidArgument(`write_offset ${req.writeOffset} for "${resourceName}", but ${writer.written} bytes were written so far`, 'write_offset');
          }
          if (req.data.byteLength > 0) await writer.write(req.data);
          if (req.finishWrite) {
            const size = writer.written;
            await writer.commit();
            finished = true;
            return { committedSize: size };
          }
        }
        if (resourceName === undefined) throw invalidArgument('Write stream carried no request: resource_name is required');
        endedEarly = true;
        throw invalidArgument(`Write stream for "${resourceName}" ended without finish_write after ${lease?.writer.written ?? 0} bytes`);
      } finally {
        // A broken stream keeps its bytes for QueryWriteStatus and a resumed Write; an
        // upload refused for its content (bad hash, too much data) is thrown away.
        if (lease) await lease.release(!finished && (endedEarly || ctx.cancelled()));
      }
    }),

    QueryWriteStatus: unary(log, 'QueryWriteStatus', async (req: bytestream.QueryWriteStatusRequest) => {
      const name = parseWriteResourceName(req.resourceName, opts.instances);
      if ((await store.findMissing([name.digest])).length === 0) return { committedSize: name.digest.sizeBytes, complete: true };
      await uploads.settled(req.resourceName);
      const committed = uploads.committed(req.resourceName);
      if (committed === undefined) throw notFound(`no upload in progress for "${req.resourceName}"`);
      return { committedSize: committed, complete: false };
    }),
  };
}
