import type { Database } from 'lmdb';
import type { Digest } from '../digest/digest.js';
import type { InstanceName } from '../digest/instance-name.js';
import { re, type IActionResult } from '../proto.js';
import type { LmdbEnv } from '../store/lmdb-env.js';
import type { ActionCache } from './action-cache.js';

/** ActionResults stored as their protobuf bytes in an LMDB database. */
export class LmdbActionCache implements ActionCache {
  private readonly db: Database<Buffer, string>;

  constructor(private readonly env: LmdbEnv) {
    this.db = env.binary('action-cache');
  }

  private static key(instance: InstanceName, action: Digest): string {
    // "\u0000" cannot occur in an instance name, so keys of different instances never collide.
    return `${instance.value}\u0000${action.key}/${action.sizeBytes}`;
  }

  async get(instance: InstanceName, action: Digest): Promise<IActionResult | undefined> {
    const bytes = this.db.getBinary(LmdbActionCache.key(instance, action));
    return bytes ? re.ActionResult.decode(bytes) : undefined;
  }

  async put(instance: InstanceName, action: Digest, result: IActionResult): Promise<void> {
    const bytes = Buffer.from(re.ActionResult.encode(result).finish());
    await this.env.write(`storing the result of action ${action}`, () => this.db.put(LmdbActionCache.key(instance, action), bytes));
  }

  /** Entries stored (LMDB's count: no scan). */
  entries(): number {
    return (this.db.getStats() as { entryCount?: number }).entryCount ?? 0;
  }

  async delete(instance: InstanceName, action: Digest): Promise<void> {
    await this.env.write(`deleting the result of action ${action}`, () => this.db.remove(LmdbActionCache.key(instance, action)), { deletion: true });
  }
}
