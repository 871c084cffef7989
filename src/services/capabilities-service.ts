import type * as grpc from '@grpc/grpc-js';
import { COMPRESSOR_VALUES, SERVED_COMPRESSORS } from '../cas/compression.js';
import { DIGEST_FUNCTIONS, SHA256 } from '../digest/digest-function.js';
import type { InstancePolicy } from '../digest/instance-name.js';
import { re } from '../proto.js';
import type { Logger } from '../util/logger.js';
import { STAGED_NODE_PROPERTIES } from '../worker/input-stager.js';
import { method, unary, type CallContext } from './grpc-adapters.js';

const SERVICE = 'build.bazel.remote.execution.v2.Capabilities';

export const capabilitiesDefinition = {
  GetCapabilities: method(SERVICE, 'GetCapabilities', re.GetCapabilitiesRequest, re.ServerCapabilities),
};

/** API versions: Bazel 7 refuses a low version above 2.0; 2.3 is the newest revision served. */
export const LOW_API_VERSION = { major: 2, minor: 0, patch: 0, prerelease: '' };
export const HIGH_API_VERSION = { major: 2, minor: 3, patch: 0, prerelease: '' };

export interface CapabilitiesOptions {
  instances: InstancePolicy;
  maxBatchBytes: number;
  /** Whether clients may write the action cache (UpdateActionResult). */
  acUpdateEnabled: boolean;
  /** Execution, once the daemon runs actions. */
  execution?: { enabled: boolean; priorities?: { min: number; max: number } };
  /**
   * The caller's rights, when access is controlled: a client without "write" sees
   * update_enabled=false, one without "execute" exec_enabled=false.
   */
  callerRights?: (ctx: CallContext) => ReadonlySet<string>;
}

export function capabilitiesService(log: Logger, opts: CapabilitiesOptions): grpc.UntypedServiceImplementation {
  const functions = DIGEST_FUNCTIONS.map((f) => f.value);
  const compressors = SERVED_COMPRESSORS.map((c) => COMPRESSOR_VALUES[c]);
  return {
    GetCapabilities: unary(log, 'GetCapabilities', async (req: re.GetCapabilitiesRequest, ctx) => {
      opts.instances.parse(req.instanceName);
      const rights = opts.callerRights?.(ctx);
      const updateEnabled = opts.acUpdateEnabled && (!rights || rights.has('write'));
      const execEnabled = !!opts.execution?.enabled && (!rights || rights.has('execute'));
      return re.ServerCapabilities.create({
        cacheCapabilities: {
          digestFunctions: functions,
          actionCacheUpdateCapabilities: { updateEnabled },
          maxBatchTotalSizeBytes: opts.maxBatchBytes,
          symlinkAbsolutePathStrategy: re.SymlinkAbsolutePathStrategy.Value.ALLOWED,
          // The same for ByteStream and both batch RPCs (BatchReadBlobs.acceptable_compressors too).
          supportedCompressors: compressors,
          supportedBatchUpdateCompressors: compressors,
        },
        executionCapabilities: execEnabled && opts.execution
          ? {
              digestFunction: SHA256.value,
              digestFunctions: functions,
              execEnabled: true,
              // Node properties, not platform properties (remoteApisSocketPath, reexec-sandbox:
              // those are in the README): what staging honours on input files and directories.
              supportedNodeProperties: [...STAGED_NODE_PROPERTIES],
              executionPriorityCapabilities: opts.execution.priorities
                ? { priorities: [{ minPriority: opts.execution.priorities.min, maxPriority: opts.execution.priorities.max }] }
                : undefined,
            }
          : { digestFunction: SHA256.value, execEnabled: false },
        lowApiVersion: LOW_API_VERSION,
        highApiVersion: HIGH_API_VERSION,
        deprecatedApiVersion: LOW_API_VERSION,
      });
    }),
  };
}
