import type { Database } from 'lmdb';
import { Digest } from '../digest/digest.js';
import { digestFunctionFromName } from '../digest/digest-function.js';
import { InstanceName } from '../digest/instance-name.js';
import { re } from '../proto.js';
import type { LmdbEnv } from '../store/lmdb-env.js';
import type { Job, Operation } from './operation.js';
import type { OperationJournal } from './scheduler.js';

interface OperationRecord {
  name: string;
  instance: string;
  action: { f: string; h: string; s: number };
  stage: Operation['stage'];
  pool: string;
  priority: number;
  queuedAt: number;
  completedAt?: number;
  attempts: number;
  response?: Buffer;
  client?: string;
}

/** Operations in LMDB, so the queue and recent results survive a daemon restart. */
export class LmdbOperationJournal implements OperationJournal {
  private readonly db: Database<OperationRecord, string>;

  constructor(env: LmdbEnv) {
    this.db = env.records<OperationRecord>('operations');
  }

  save(op: Operation): void {
    const rec: OperationRecord = {
      name: op.name,
      instance: op.job.instance.value,
      action: { f: op.job.actionDigest.fn.name, h: op.job.actionDigest.hash, s: op.job.actionDigest.sizeBytes },
      stage: op.stage,
      pool: op.pool,
      priority: op.job.priority,
      queuedAt: op.queuedAt.getTime(),
      completedAt: op.completedAt?.getTime(),
      attempts: op.attempts,
      response: op.response ? Buffer.from(re.ExecuteResponse.encode(op.response).finish()) : undefined,
      client: op.client,
    };
    this.db.put(op.name, rec).catch(() => undefined);
  }

  remove(name: string): void {
    this.db.remove(name).catch(() => undefined);
  }

  /**
   * What the journal holds, for restore: each record with its action digest. Rebuilding the
   * job (reloading Action, Command, inputs) is the caller's business.
   */
  load(): Array<{ name: string; instance: InstanceName; actionDigest: Digest; stage: Operation['stage']; pool: string; priority: number; queuedAt: Date; completedAt?: Date; attempts: number; response?: re.IExecuteResponse; client?: string }> {
    const out = [];
    for (const { value: r } of this.db.getRange()) {
      const fn = digestFunctionFromName(r.action.f);
      if (!fn) continue;
      out.push({
        name: r.name,
        instance: InstanceName.parse(r.instance),
        actionDigest: Digest.of(fn, r.action.h, r.action.s),
        stage: r.stage,
        pool: r.pool,
        priority: r.priority,
        queuedAt: new Date(r.queuedAt),
        completedAt: r.completedAt ? new Date(r.completedAt) : undefined,
        attempts: r.attempts,
        response: r.response ? re.ExecuteResponse.decode(r.response) : undefined,
        client: r.client,
      });
    }
    return out;
  }
}

export type { Job };
