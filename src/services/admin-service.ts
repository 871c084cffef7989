import type * as grpc from '@grpc/grpc-js';
import { reexec } from '../gen/proto.js';
import type { Logger } from '../util/logger.js';
import { unimplemented } from '../util/status-error.js';
import type { GcProgress } from '../gc/garbage-collector.js';
import type { GcRunSummary } from '../gc/storage-gc.js';
import type { StatusSnapshot } from '../status/status-snapshot.js';
import { gcProgressMessage, gcSummaryMessage, statusToMessage } from './admin-messages.js';
import { method, serverStream, unary } from './grpc-adapters.js';

const admin = reexec.admin.v1;
const SERVICE = 'reexec.admin.v1.Admin';

export const adminDefinition = {
  GetStatus: method(SERVICE, 'GetStatus', admin.GetStatusRequest, admin.StatusSnapshot),
  CollectGarbage: method(SERVICE, 'CollectGarbage', admin.CollectGarbageRequest, admin.CollectGarbageProgress, { response: true }),
};

export interface AdminBackend {
  status(): Promise<StatusSnapshot>;
  /**
   * Evict blobs; calls progress with updates; resolves to the summary.
   * targetBytes undefined: down to the configured low watermark; maxAgeSeconds undefined: no age limit.
   */
  collectGarbage?(req: { targetBytes?: number; maxAgeSeconds?: number; dryRun: boolean; ignoreGrace?: boolean }, progress: (p: GcProgress) => Promise<void>): Promise<GcRunSummary>;
}

export function adminService(log: Logger, backend: AdminBackend): grpc.UntypedServiceImplementation {
  return {
    GetStatus: unary(log, 'GetStatus', async () => statusToMessage(await backend.status())),
    CollectGarbage: serverStream(log, 'CollectGarbage', async (req: reexec.admin.v1.CollectGarbageRequest, out) => {
      if (!backend.collectGarbage) throw unimplemented('garbage collection is not available in this daemon');
      const summary = await backend.collectGarbage(
        {
          targetBytes: req.targetBytes === null || req.targetBytes === undefined ? undefined : Math.max(0, Number(req.targetBytes)),
          maxAgeSeconds: Number(req.maxAgeSeconds) > 0 ? Number(req.maxAgeSeconds) : undefined,
          dryRun: req.dryRun,
          ...(req.ignoreGrace ? { ignoreGrace: true } : {}),
        },
        (p) => out.write(gcProgressMessage(p)),
      );
      await out.write(gcSummaryMessage(summary));
    }),
  };
}
