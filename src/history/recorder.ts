import { EventEmitter } from 'node:events';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type * as grpc from '@grpc/grpc-js';
import type { HistoryConfig } from '../config/config.js';
import type { Digest } from '../digest/digest.js';
import type { InstanceName } from '../digest/instance-name.js';
import type { re } from '../proto.js';
import type { Operation } from '../scheduler/operation.js';
import type { Logger } from '../util/logger.js';
import { executeEntry, lookupEntry, REQUEST_METADATA_HEADER, requestInfoOf, type ClientInfo, type HistoryEntry, type RequestInfo } from './entry.js';
import type { HistoryStore } from './history-store.js';

/** What the recorder needs of a call: who made it and what it sent (services' CallContext). */
export interface CallInfo {
  peer: string;
  metadata: grpc.Metadata;
}

export interface HistoryRecorderOptions {
  store: HistoryStore;
  config: HistoryConfig;
  log: Logger;
  /** The name of the access token a call presents, if any (a daemon with a token file). */
  identify?: (metadata: grpc.Metadata) => string | undefined;
  /** How often buffered entries are written (a crash loses at most this much history). */
  flushIntervalMs?: number;
  /** How often retention runs. */
  sweepIntervalMs?: number;
  /** Entries held when LMDB cannot keep up; past this the oldest buffered are dropped (and logged). */
  maxBuffered?: number;
  now?: () => number;
}

export interface HistoryRecorderEvents {
  /** An entry was recorded (before it is written): `--watch`, the dashboard, failed-action retention. */
  entry: (e: HistoryEntry) => void;
}

/**
 * Records Execute calls and GetActionResult lookups off the hot path: the services' hooks
 * build a small plain entry and push it into a buffer; a timer writes the buffer to LMDB in
 * one asynchronous transaction a second, and retention removes the oldest entries in short
 * batches. Listeners see each entry at once.
 */
export class HistoryRecorder extends EventEmitter {
  private buffer: HistoryEntry[] = [];
  private writing: Promise<void> = Promise.resolve();
  private sweeping: Promise<void> | undefined;
  private timers: NodeJS.Timeout[] = [];
  private dropped = 0;
  private stopped = false;
  /** Who submitted each operation (an Execute call's context), until it completes. */
  private readonly callers = new WeakMap<Operation, { client: ClientInfo; request?: RequestInfo }>();
  private readonly recorded = new WeakSet<Operation>();
  private readonly now: () => number;

  constructor(private readonly opts: HistoryRecorderOptions) {
    super();
    this.setMaxListeners(0);
    this.now = opts.now ?? Date.now;
  }

  get store(): HistoryStore {
    return this.opts.store;
  }

  get config(): HistoryConfig {
    return this.opts.config;
  }

  start(): void {
    this.timers.push(setInterval(() => void this.flush(), this.opts.flushIntervalMs ?? 1000));
    this.timers.push(setInterval(() => void this.sweep(), this.opts.sweepIntervalMs ?? 60_000));
    for (const t of this.timers) t.unref();
    void this.sweep();
  }

  /** Write what is buffered, then stop the timers. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.sweeping;
    await this.flush();
  }

  private callerOf(call: CallInfo): { client: ClientInfo; request?: RequestInfo } {
    const identity = this.opts.identify?.(call.metadata);
    const request = requestInfoOf(call.metadata.get(REQUEST_METADATA_HEADER)[0] as Buffer | undefined);
    return { client: { peer: call.peer, ...(identity ? { identity } : {}) }, ...(request ? { request } : {}) };
  }

  /**
   * The Execution service's hook: an Execute call made `op`. A cache hit is recorded now; an
   * operation that runs is recorded when the scheduler reports it completed.
   */
  readonly onOperation = (op: Operation, call: CallInfo): void => {
    this.callers.set(op, this.callerOf(call));
    if (op.stage === 'COMPLETED') this.operationCompleted(op);
  };

  /** The ActionCache service's hook: a GetActionResult answered (result) or missed (undefined). */
  readonly onLookup = (instance: InstanceName, actionDigest: Digest, result: re.IActionResult | undefined, call: CallInfo): void => {
    const caller = this.callerOf(call);
    this.record(lookupEntry({ at: this.now(), instance: instance.value, actionDigest, result, ...caller }));
  };

  /** Follow a scheduler: every operation that completes is recorded (once). */
  observe(scheduler: EventEmitter): void {
    scheduler.on('change', (op: Operation) => {
      if (op.stage === 'COMPLETED') this.operationCompleted(op);
    });
  }

  private operationCompleted(op: Operation): void {
    if (this.recorded.has(op) || !op.response) return;
    this.recorded.add(op);
    const caller = this.callers.get(op) ?? { client: { peer: op.client ?? '' } };
    this.callers.delete(op);
    const job = op.job;
    this.record(
      executeEntry({
        at: op.completedAt?.getTime() ?? this.now(),
        operation: op.name,
        instance: job.instance.value,
        actionDigest: job.actionDigest,
        action: job.action,
        command: job.command,
        worker: op.execution.worker,
        response: op.response,
        ...caller,
      }),
    );
  }

  /** Buffer an entry for the next write and tell listeners. */
  record(entry: HistoryEntry): void {
    const max = this.opts.maxBuffered ?? 100_000;
    if (this.buffer.length >= max) {
      this.buffer.shift();
      if (this.dropped++ === 0) this.opts.log.warn(`action history: the store cannot keep up, dropping the oldest unwritten entries (more than ${max} waiting)`);
    }
    this.buffer.push(entry);
    this.emit('entry', entry);
  }

  /** Write the buffer now (in one transaction, after any write in progress). */
  flush(): Promise<void> {
    this.writing = this.writing.then(async () => {
      if (this.buffer.length === 0) return;
      const batch = this.buffer;
      this.buffer = [];
      try {
        await this.opts.store.write(batch);
      } catch (err) {
        this.opts.log.warn(`action history: could not write ${batch.length} entries: ${(err as Error).message}`);
      }
      if (this.opts.store.size > this.opts.config.maxEntries + 1000 && !this.stopped) void this.sweep();
    });
    return this.writing;
  }

  /** Apply retention: remove the oldest entries past the count or the age, a short batch at a time. */
  sweep(): Promise<void> {
    if (this.sweeping) return this.sweeping;
    this.sweeping = (async () => {
      try {
        const { maxEntries, maxAgeSeconds } = this.opts.config;
        const cutoff = this.now() - maxAgeSeconds * 1000;
        let removed = 0;
        for (;;) {
          const n = await this.opts.store.sweep(maxEntries, cutoff, 500);
          removed += n;
          if (n < 500 || this.stopped) break;
          await nextTurn();
        }
        if (removed > 0) this.opts.log.debug(`action history: removed ${removed} entries past the retention`);
      } catch (err) {
        this.opts.log.warn(`action history: retention failed: ${(err as Error).message}`);
      } finally {
        this.sweeping = undefined;
      }
    })();
    return this.sweeping;
  }
}
