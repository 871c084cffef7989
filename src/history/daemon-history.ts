import type { EventEmitter } from 'node:events';
import type * as grpc from '@grpc/grpc-js';
import type { ActionCache } from '../ac/action-cache.js';
import type { BlobStore } from '../cas/blob-store.js';
import type { HistoryConfig } from '../config/config.js';
import type { InUseDigests } from '../gc/in-use-digests.js';
import type { LmdbEnv } from '../store/lmdb-env.js';
import type { Logger } from '../util/logger.js';
import { ActionHistory, type SandboxSettings } from './action-history.js';
import { FailedActionKeeper } from './failed-actions.js';
import { HistoryStore } from './history-store.js';
import { HistoryRecorder } from './recorder.js';

/**
 * The action history as the daemon runs it: the store in the data dir's LMDB, the recorder
 * whose hooks the ActionCache and Execution services call, failed-action retention once
 * remote execution runs, and the ActionHistory the Admin API serves.
 */
export class DaemonHistory {
  readonly store: HistoryStore;
  readonly recorder: HistoryRecorder;
  private keeper?: FailedActionKeeper;
  private sandbox: SandboxSettings = { hide: [], hideFiles: [] };
  readonly actions: ActionHistory;

  constructor(
    private readonly deps: {
      env: LmdbEnv;
      cas: BlobStore;
      ac: ActionCache;
      config: HistoryConfig;
      log: Logger;
      /** The access token's name of a call, if the daemon has a token file. */
      identify?: (metadata: grpc.Metadata) => string | undefined;
    },
  ) {
    this.store = new HistoryStore(deps.env);
    this.recorder = new HistoryRecorder({ store: this.store, config: deps.config, log: deps.log.child({ component: 'history' }), identify: deps.identify });
    const self = this;
    this.actions = new ActionHistory({
      store: this.store,
      recorder: this.recorder,
      cas: deps.cas,
      ac: deps.ac,
      config: deps.config,
      get keeper() {
        return self.keeper;
      },
      get sandbox() {
        return self.sandbox;
      },
    });
  }

  /**
   * Remote execution runs: record every operation the scheduler completes, keep the blobs of
   * the newest failures from the garbage collector, and repeat the workers' sandbox in `reexec shell`.
   */
  attachExecution(scheduler: EventEmitter, inUse: InUseDigests, sandbox: SandboxSettings): void {
    this.recorder.observe(scheduler);
    this.sandbox = sandbox;
    if (this.deps.config.keepFailed > 0) {
      this.keeper = new FailedActionKeeper(this.deps.cas, inUse, this.deps.config.keepFailed, this.deps.log);
      void this.keeper.start(this.store, this.recorder);
    }
  }

  start(): void {
    this.recorder.start();
  }

  /** Write what is buffered. After the workers stopped, before LMDB closes. */
  async stop(): Promise<void> {
    await this.keeper?.stop();
    await this.recorder.stop();
  }
}
