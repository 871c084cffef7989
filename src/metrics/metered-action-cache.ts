import type { ActionCache } from '../ac/action-cache.js';
import type { Digest } from '../digest/digest.js';
import type { InstanceName } from '../digest/instance-name.js';
import type { IActionResult } from '../proto.js';
import type { StoreMetrics } from './store-metrics.js';

/** Counts hits and misses of the action cache it wraps (outermost: an incomplete entry is a miss). */
export class MeteredActionCache implements ActionCache {
  constructor(
    private readonly base: ActionCache,
    private readonly metrics: StoreMetrics,
  ) {}

  async get(instance: InstanceName, action: Digest): Promise<IActionResult | undefined> {
    const result = await this.base.get(instance, action);
    this.metrics.recordAcLookup(result !== undefined);
    return result;
  }

  put(instance: InstanceName, action: Digest, result: IActionResult): Promise<void> {
    return this.base.put(instance, action, result);
  }

  delete(instance: InstanceName, action: Digest): Promise<void> {
    return this.base.delete(instance, action);
  }
}
