import type * as grpc from '@grpc/grpc-js';
import type { ClientSecurity } from '../client/client-security.js';
import { connect } from '../client/reapi-client.js';
import { DaemonUnreachableError, unreachableReason } from '../client/daemon-errors.js';
import type { reexec } from '../gen/proto.js';
import { gcUpdateFromMessage } from '../services/admin-messages.js';
import type { GcProgress, GcRequest } from './garbage-collector.js';
import type { GcRunSummary } from './storage-gc.js';

/** Ask the daemon at `endpoint` to collect garbage (Admin.CollectGarbage), following its progress. */
export async function collectGarbageRemote(
  endpoint: string,
  request: GcRequest,
  progress?: (p: GcProgress) => void,
  options: { connectTimeoutMs?: number; security?: ClientSecurity } = {},
): Promise<GcRunSummary> {
  const clients = connect(endpoint, {}, options.security ?? {});
  try {
    await new Promise<void>((resolve, reject) =>
      clients.admin.waitForReady(Date.now() + (options.connectTimeoutMs ?? 3000), (err?: Error) => (err ? reject(new DaemonUnreachableError(endpoint, unreachableReason(err.message))) : resolve())),
    );
    return await new Promise<GcRunSummary>((resolve, reject) => {
      let summary: GcRunSummary | undefined;
      const req: reexec.admin.v1.ICollectGarbageRequest = { maxAgeSeconds: request.maxAgeSeconds ?? 0, dryRun: request.dryRun ?? false, ignoreGrace: request.ignoreGrace ?? false };
      if (request.targetBytes !== undefined) req.targetBytes = request.targetBytes;
      const stream: grpc.ClientReadableStream<reexec.admin.v1.CollectGarbageProgress> = clients.admin.CollectGarbage(req);
      stream.on('data', (m: reexec.admin.v1.CollectGarbageProgress) => {
        const update = gcUpdateFromMessage(m);
        if (update && 'summary' in update) summary = update.summary;
        else if (update) progress?.(update.progress);
      });
      stream.on('error', reject);
      stream.on('end', () => (summary ? resolve(summary) : reject(new Error(`the daemon at ${endpoint} ended CollectGarbage without a summary`))));
    });
  } finally {
    clients.close();
  }
}
