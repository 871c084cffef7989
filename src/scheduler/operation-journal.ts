import type { Database } from 'lmdb';
import { Digest } from '../digest/digest.js';
import { digestFunctionFromName } from '../digest/digest-function.js';
import { InstanceName } from '../digest/instance-name.js';
import { re } from '../proto.js';
import type { LmdbEnv } from '../store/lmdb-env.js';
import type { Job, Operation, Stage, Submitter } from './operation.js';
import type { OperationJournal } from './scheduler.js';
import { pausePoint } from '../util/test-hooks.js';

/**
 * One operation and what it knows of its execution. Operations sharing an execution carry the
 * same `execution` id and the same execution fields. Records written before operations had
 * executions of their own lack `execution`: each is then an execution of its own.
 */
interface OperationRecord {
  name: string;
  execution?: string;
  instance: string;
  action: { f: string; h: string; s: number };
  stage: Stage;
  pool: string;
  priority: number;
  queuedAt: number;
  completedAt?: number;
  attempts: number;
  response?: Buffer;
  client?: string;
  parent?: string;
  rights?: string[];
}

/** An operation as the journal holds it; rebuilding its job (Action, Command, inputs) is the caller's business. */
export interface JournalEntry {
  name: string;
  execution: string;
  instance: InstanceName;
  actionDigest: Digest;
  stage: Stage;
  pool: string;
  priority: number;
  queuedAt: Date;
  completedAt?: Date;
  attempts: number;
  response?: re.IExecuteResponse;
  submitter: Submitter;
}

/** Operations in LMDB, so the queue and recent results survive a daemon restart. */
export class LmdbOperationJournal implements OperationJournal {
  private readonly db: Database<OperationRecord, string>;

  constructor(private readonly env: LmdbEnv) {
    this.db = env.records<OperationRecord>('operations');
  }

  async save(op: Operation): Promise<void> {
    const ex = op.execution;
    const response = op.response;
    const rec: OperationRecord = {
      name: op.name,
      execution: ex.id,
      instance: op.job.instance.value,
      action: { f: op.job.actionDigest.fn.name, h: op.job.actionDigest.hash, s: op.job.actionDigest.sizeBytes },
      stage: op.stage,
      pool: ex.pool,
      priority: op.job.priority,
      queuedAt: op.queuedAt.getTime(),
      completedAt: op.completedAt?.getTime(),
      attempts: ex.attempts,
      response: response ? Buffer.from(re.ExecuteResponse.encode(response).finish()) : undefined,
      client: op.submitter.client,
      parent: op.submitter.parent,
      rights: ex.rights ? [...ex.rights] : op.submitter.rights ? [...op.submitter.rights] : undefined,
    };
    // Best effort: on a full disk the operation runs on, it would only not survive a restart.
    await pausePoint('operation-journal-write');
    return this.env.write(`recording operation ${op.name}`, () => this.db.put(op.name, rec)).then(
      () => undefined,
      () => undefined,
    );
  }

  remove(name: string): void {
    this.env.write(`forgetting operation ${name}`, () => this.db.remove(name), { deletion: true }).catch(() => undefined);
  }

  /** What the journal holds, for restore. */
  load(): JournalEntry[] {
    const out: JournalEntry[] = [];
    for (const { value: r } of this.db.getRange()) {
      const fn = digestFunctionFromName(r.action.f);
      if (!fn) continue;
      out.push({
        name: r.name,
        execution: r.execution ?? r.name,
        instance: InstanceName.parse(r.instance),
        actionDigest: Digest.of(fn, r.action.h, r.action.s),
        stage: r.stage,
        pool: r.pool,
        priority: r.priority,
        queuedAt: new Date(r.queuedAt),
        completedAt: r.completedAt ? new Date(r.completedAt) : undefined,
        attempts: r.attempts,
        response: r.response ? re.ExecuteResponse.decode(r.response) : undefined,
        submitter: { client: r.client, parent: r.parent, rights: r.rights },
      });
    }
    return out;
  }
}

export type { Job };
