import type { StatusSnapshot } from '../status/status-snapshot.js';

export interface FeedState {
  /** The latest snapshot received (kept while the daemon is unreachable). */
  snapshot?: StatusSnapshot;
  /** Why the last poll failed; cleared by the next success. */
  error?: string;
  /** When polls started failing (ms since the epoch). */
  failingSince?: number;
  paused: boolean;
  /** When the latest snapshot arrived. */
  receivedAt?: number;
  /** Snapshots received so far. */
  received: number;
}

/**
 * The dashboard's state, outside React: polls the daemon every `intervalMs` (fixed rate,
 * never two polls at once) and tells subscribers. The root component reads it with
 * useSyncExternalStore; pausing stops polling and freezes the picture.
 */
export class StatusFeed {
  private state: FeedState = { paused: false, received: 0 };
  private readonly listeners = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private inFlight = false;

  constructor(
    private readonly fetchSnapshot: () => Promise<StatusSnapshot>,
    readonly intervalMs = 400,
    private readonly now: () => number = Date.now,
  ) {}

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  readonly getState = (): FeedState => this.state;

  /** How many subscribers there are (the dashboard is one while it is mounted). */
  get subscribers(): number {
    return this.listeners.size;
  }

  private set(patch: Partial<FeedState>): void {
    this.state = { ...this.state, ...patch };
    for (const l of this.listeners) l();
  }

  /** Show this snapshot until the first poll answers (the command fetched one already). */
  seed(snapshot: StatusSnapshot): void {
    this.set({ snapshot, receivedAt: this.now(), received: this.state.received + 1 });
  }

  start(): void {
    if (this.timer) return;
    void this.poll();
    this.timer = setInterval(() => void this.poll(), this.intervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  togglePause(): void {
    this.set({ paused: !this.state.paused });
    if (!this.state.paused) void this.poll();
  }

  /** One poll now (unless paused or one is running). */
  async poll(): Promise<void> {
    if (this.inFlight || this.state.paused) return;
    this.inFlight = true;
    try {
      const snapshot = await this.fetchSnapshot();
      if (this.state.paused) return;
      this.set({ snapshot, error: undefined, failingSince: undefined, receivedAt: this.now(), received: this.state.received + 1 });
    } catch (err) {
      this.set({ error: (err as Error).message, failingSince: this.state.failingSince ?? this.now() });
    } finally {
      this.inFlight = false;
    }
  }
}
