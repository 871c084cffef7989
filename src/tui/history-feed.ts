import type { reexec } from '../gen/proto.js';
import type { HistoryEntry } from '../history/entry.js';

/** What the History view reads from the daemon (HistoryClient). */
export interface HistorySource {
  list(req: reexec.admin.v1.IListHistoryRequest): Promise<HistoryEntry[]>;
  show(ref: string, tailBytes?: number): Promise<reexec.admin.v1.IActionDetails>;
}

export interface HistoryFeedState {
  /** The newest entries, newest first. */
  entries: HistoryEntry[];
  /** Only failed actions are listed. */
  failedOnly: boolean;
  /** The selected entry's id (undefined: the newest). */
  selectedId?: string;
  /** What `show` says of the selected entry, once fetched. */
  details?: { id: string; show?: reexec.admin.v1.IActionDetails; error?: string };
  /** Why the last poll failed. */
  error?: string;
  /** A first answer came. */
  loaded: boolean;
}

/** How the view refers to an entry when asking `show`: the exact operation, else the action. */
export const refOf = (e: HistoryEntry): string => e.operation ?? e.action;

/**
 * The History view's state, outside React: polls the daemon's history while the view is
 * shown (never two polls at once), keeps the selection on the same entry as new ones arrive,
 * and fetches the selected entry's details once.
 */
export class HistoryFeed {
  private state: HistoryFeedState = { entries: [], failedOnly: false, loaded: false };
  private readonly listeners = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private inFlight = false;
  private readonly details = new Map<string, NonNullable<HistoryFeedState['details']>>();
  private fetching: string | undefined;

  constructor(
    private readonly source: HistorySource,
    readonly intervalMs = 1000,
    /** Entries listed. */
    readonly limit = 200,
  ) {}

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  readonly getState = (): HistoryFeedState => this.state;

  private set(patch: Partial<HistoryFeedState>): void {
    this.state = { ...this.state, ...patch };
    for (const l of this.listeners) l();
  }

  /** Poll while the view is shown; stop when it is not. */
  setActive(active: boolean): void {
    if (active && !this.timer) {
      void this.poll();
      this.timer = setInterval(() => void this.poll(), this.intervalMs);
    } else if (!active && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  stop(): void {
    this.setActive(false);
  }

  /** The selected entry's index in the list. */
  selectedIndex(s: HistoryFeedState = this.state): number {
    const i = s.selectedId ? s.entries.findIndex((e) => e.id === s.selectedId) : -1;
    return i >= 0 ? i : 0;
  }

  /** Move the selection by `delta` rows (down the list is older). */
  move(delta: number): void {
    const { entries } = this.state;
    if (entries.length === 0) return;
    const i = Math.max(0, Math.min(entries.length - 1, this.selectedIndex() + delta));
    this.select(entries[i]!.id);
  }

  /** Back to the newest entry (and follow the newest again). */
  home(): void {
    this.set({ selectedId: undefined });
    this.fetchDetails();
  }

  toggleFailed(): void {
    this.set({ failedOnly: !this.state.failedOnly, selectedId: undefined, entries: [], loaded: false });
    void this.poll();
  }

  private select(id: string): void {
    this.set({ selectedId: id });
    this.fetchDetails();
  }

  async poll(): Promise<void> {
    if (this.inFlight) return;
    this.inFlight = true;
    try {
      const entries = await this.source.list({ limit: this.limit, failedOnly: this.state.failedOnly });
      // A selected entry that fell off the list: back to the newest.
      const selectedId = this.state.selectedId && entries.some((e) => e.id === this.state.selectedId) ? this.state.selectedId : undefined;
      this.set({ entries, selectedId, error: undefined, loaded: true });
      this.fetchDetails();
    } catch (err) {
      this.set({ error: (err as Error).message, loaded: true });
    } finally {
      this.inFlight = false;
    }
  }

  /** The selected entry's details: cached, or fetched now (one at a time). */
  private fetchDetails(): void {
    const s = this.state;
    const e = s.entries[this.selectedIndex(s)];
    if (!e) return;
    const known = this.details.get(e.id);
    if (known) {
      if (s.details?.id !== e.id) this.set({ details: known });
      return;
    }
    if (s.details?.id !== e.id) this.set({ details: { id: e.id } });
    if (this.fetching === e.id) return;
    this.fetching = e.id;
    this.source.show(refOf(e), 2048).then(
      (show) => this.gotDetails({ id: e.id, show }),
      (err: Error) => this.gotDetails({ id: e.id, error: err.message }),
    );
  }

  private gotDetails(d: NonNullable<HistoryFeedState['details']>): void {
    if (this.fetching === d.id) this.fetching = undefined;
    this.details.set(d.id, d);
    if (this.details.size > 100) this.details.delete(this.details.keys().next().value!);
    const selected = this.state.entries[this.selectedIndex()];
    if (selected?.id === d.id) this.set({ details: d });
    else this.fetchDetails();
  }
}
