import type { ActionCache } from '../ac/action-cache.js';
import { actionResultReferences } from '../ac/completeness-checking-action-cache.js';
import type { CompletenessCheck } from '../cas/completeness-check.js';
import type { Digest } from '../digest/digest.js';
import type { InstanceName } from '../digest/instance-name.js';
import type { IActionResult } from '../proto.js';
import type { Logger } from '../util/logger.js';
import * as grpc from '@grpc/grpc-js';
import type { UpstreamCas } from './upstream-cas.js';
import { UpstreamError, type UpstreamConnection } from './upstream-connection.js';
import type { UpstreamStats } from './upstream-stats.js';
import type { WriteBehindQueue } from './write-behind-queue.js';

/**
 * The action cache in front of an upstream. A local miss asks the upstream
 * (GetActionResult); its entry is a hit only when the upstream holds every blob it refers to
 * (the completeness check, run on the upstream's CAS): "Missing digest" errors are what a
 * stale entry costs a Bazel user. A complete upstream entry is kept locally (its blobs come
 * through the CAS read-through when read). Writes, also those of local execution, go to the
 * local cache, then behind to the upstream through the queue (blobs first).
 */
export class ReadThroughActionCache implements ActionCache {
  constructor(
    private readonly local: ActionCache,
    private readonly conn: UpstreamConnection,
    private readonly upstream: UpstreamCas,
    /** The completeness check over the upstream's CAS. */
    private readonly upstreamCheck: CompletenessCheck,
    private readonly queue: WriteBehindQueue | undefined,
    private readonly stats: UpstreamStats,
    private readonly log: Logger,
  ) {}

  async get(instance: InstanceName, action: Digest): Promise<IActionResult | undefined> {
    const local = await this.local.get(instance, action);
    if (local) {
      this.stats.ac.local++;
      return local;
    }
    if (!this.upstream.supports(action)) return this.missed();
    if (!this.conn.usable) {
      this.stats.ac.upstreamDown++;
      return this.missed();
    }
    let result: IActionResult;
    try {
      result = await this.conn.unary<IActionResult>('actionCache', 'GetActionResult', {
        instanceName: this.conn.instance,
        actionDigest: action.toProto(),
        inlineStdout: false,
        inlineStderr: false,
        digestFunction: action.fn.value,
      });
    } catch (err) {
      if (!(err instanceof UpstreamError && err.code === grpc.status.NOT_FOUND)) this.log.debug(`GetActionResult upstream for ${action} failed: ${(err as Error).message}`);
      return this.missed();
    }
    if (!(await this.upstreamCheck.isComplete(actionResultReferences(result, action)))) {
      this.stats.ac.incomplete++;
      return this.missed();
    }
    // Kept here (behind the answer: an LMDB commit) without queueing it back up: the upstream has it.
    this.local.put(instance, action, result).catch((err: Error) => this.log.warn(`keeping the action result of ${action} from the upstream failed: ${err.message}`));
    this.stats.ac.upstream++;
    return result;
  }

  async put(instance: InstanceName, action: Digest, result: IActionResult): Promise<void> {
    await this.local.put(instance, action, result);
    this.queue?.addActionResult(instance, action);
  }

  delete(instance: InstanceName, action: Digest): Promise<void> {
    return this.local.delete(instance, action);
  }

  private missed(): undefined {
    this.stats.ac.miss++;
    return undefined;
  }
}
