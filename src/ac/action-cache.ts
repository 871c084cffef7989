import type { Digest } from '../digest/digest.js';
import type { InstanceName } from '../digest/instance-name.js';
import type { IActionResult } from '../proto.js';

/**
 * The action cache: per instance, action digest → ActionResult. Like BlobStore, one small
 * interface; completeness checking and metrics are decorators (see src/storage/create-storage.ts).
 */
export interface ActionCache {
  get(instance: InstanceName, action: Digest): Promise<IActionResult | undefined>;
  put(instance: InstanceName, action: Digest, result: IActionResult): Promise<void>;
  /** Forget an entry (one whose blobs were evicted). */
  delete(instance: InstanceName, action: Digest): Promise<void>;
}
