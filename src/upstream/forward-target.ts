import { call, connect } from '../client/reapi-client.js';
import type { UpstreamConfig } from '../config/config.js';
import type { re } from '../proto.js';
import type { Logger } from '../util/logger.js';
import type { UpstreamTarget } from './execution-forwarder.js';

/**
 * The upstream as the execution forwarder reaches it: one channel (keepalive pings, so a
 * dead peer breaks a held Execute stream instead of leaving it hanging), its batch limit
 * from its Capabilities (asked in the background; until known, the REAPI default room).
 */
export function openForwardTarget(config: UpstreamConfig & { url: string }, log: Logger): UpstreamTarget & { close(): void } {
  const clients = connect(config.url, { 'grpc.keepalive_time_ms': 30_000, 'grpc.keepalive_timeout_ms': 10_000, 'grpc.keepalive_permit_without_calls': 0 });
  let maxBatch = 0;
  call<unknown, re.IServerCapabilities>(clients.capabilities, 'GetCapabilities', { instanceName: config.instanceName })
    .then((caps) => {
      maxBatch = Number(caps.cacheCapabilities?.maxBatchTotalSizeBytes ?? 0);
      if (!caps.executionCapabilities?.execEnabled) log.warn(`upstream ${config.url} does not offer remote execution (exec_enabled is false): forwarded actions will fail there`);
    })
    .catch((err: Error) => log.warn(`upstream ${config.url}: GetCapabilities failed: ${err.message}`));
  return {
    url: config.url,
    instanceName: config.instanceName,
    clients,
    maxBatchBytes: () => maxBatch,
    close: () => clients.close(),
  };
}
