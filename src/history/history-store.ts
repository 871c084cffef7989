import { createHash } from 'node:crypto';
import type { Database } from 'lmdb';
import type { LmdbEnv } from '../store/lmdb-env.js';
import type { EntryKind, HistoryEntry } from './entry.js';

/** Which entries a listing wants (every field optional: all of them). */
export interface HistoryFilter {
  /** Only Executes whose action failed. */
  failed?: boolean;
  /** Only entries at or after this time (ms since the epoch). */
  sinceMs?: number;
  /** The tool named in RequestMetadata (case-insensitive; "bst" also matches BuildStream's buildbox-casd). */
  tool?: string;
  /** A substring of RequestMetadata's target_id. */
  target?: string;
  /** RequestMetadata's tool_invocation_id (or correlated_invocations_id), or a prefix of it. */
  invocation?: string;
  kind?: EntryKind;
  /** A prefix of the action digest's hash. */
  action?: string;
}

/** Tools known by another name in RequestMetadata: BuildStream 2 reaches a server through buildbox-casd. */
const TOOL_ALIASES: Record<string, string[]> = {
  bst: ['bst', 'buildstream', 'buildbox-casd'],
  buildstream: ['bst', 'buildstream', 'buildbox-casd'],
  buildbox: ['buildbox'],
};

export function matchesFilter(e: HistoryEntry, f: HistoryFilter): boolean {
  if (f.failed && !e.failed) return false;
  if (f.sinceMs !== undefined && e.at < f.sinceMs) return false;
  if (f.kind && e.kind !== f.kind) return false;
  if (f.action && !e.action.startsWith(f.action)) return false;
  if (f.tool) {
    const tool = (e.request?.tool ?? '').toLowerCase();
    const want = f.tool.toLowerCase();
    if (!(TOOL_ALIASES[want] ?? [want]).some((t) => tool.includes(t))) return false;
  }
  if (f.target && !(e.request?.targetId ?? '').includes(f.target)) return false;
  if (f.invocation) {
    const ids = [e.request?.invocationId, e.request?.correlatedInvocationsId];
    if (!ids.some((id) => id?.startsWith(f.invocation!))) return false;
  }
  return true;
}

/** Index keys longer than this are hashed (LMDB keys are bounded). */
const MAX_KEY_PART = 400;
const part = (s: string): string => (s.length > MAX_KEY_PART ? `#${createHash('sha256').update(s).digest('hex')}` : s);
/** Index keys are arrays (LMDB's ordered-binary keeps them apart and in order): [kind, value..., entry id]. */
type IndexKey = string[];
const END = '\uffff';

/** "Same target and mnemonic" (RequestMetadata), the first way `explain` finds an earlier run of an action. */
export function targetKey(e: Pick<HistoryEntry, 'request'>): string | undefined {
  const t = e.request?.targetId;
  return t ? part(`${t}\u0001${e.request?.mnemonic ?? ''}`) : undefined;
}

/** "Same argv[0] and output paths", the second way. */
export function shapeKey(argv0: string | undefined, outputPaths: readonly string[] | undefined): string | undefined {
  if (!argv0) return undefined;
  return createHash('sha256').update(JSON.stringify([argv0, [...(outputPaths ?? [])].sort()])).digest('hex');
}

function indexKeys(e: HistoryEntry): IndexKey[] {
  const keys: IndexKey[] = [['a', e.action, e.id]];
  const t = targetKey(e);
  if (t) keys.push(['t', t, e.id]);
  const s = shapeKey(e.argv?.[0], e.outputPaths);
  if (s) keys.push(['s', s, e.id]);
  if (e.failed) keys.push(['f', e.id]);
  return keys;
}

/**
 * The history in two LMDB databases of the data dir: `history` (entries by id, so by time)
 * and `history-index` (by operation, action digest, target and mnemonic, command shape, and
 * failures). Writes go in batches; retention removes the oldest entries a batch at a time.
 */
export class HistoryStore {
  private readonly entries: Database<HistoryEntry, string>;
  private readonly index: Database<string, IndexKey>;
  private count: number;

  constructor(env: LmdbEnv) {
    this.entries = env.records<HistoryEntry>('history');
    this.index = env.root.openDB<string, IndexKey>({ name: 'history-index', encoding: 'msgpack' });
    this.count = this.entries.getKeysCount();
  }

  get size(): number {
    return this.count;
  }

  /** Store entries (and their index keys) in one asynchronous LMDB transaction. */
  async write(batch: readonly HistoryEntry[]): Promise<void> {
    if (batch.length === 0) return;
    await this.entries.batch(() => {
      for (const e of batch) {
        void this.entries.put(e.id, e);
        if (e.operation) void this.index.put(['o', e.operation], e.id);
        for (const k of indexKeys(e)) void this.index.put(k, e.id);
      }
    });
    this.count += batch.length;
  }

  get(id: string): HistoryEntry | undefined {
    return this.entries.get(id);
  }

  /** Entries newest first, from before `beforeId` (exclusive) if given. */
  *newestFirst(beforeId?: string): Generator<HistoryEntry> {
    for (const { value } of this.entries.getRange({ start: beforeId ?? END, reverse: true, snapshot: false })) {
      if (beforeId !== undefined && value.id >= beforeId) continue;
      yield value;
    }
  }

  /** Entries oldest first, after `afterId` (exclusive) if given. */
  *oldestFirst(afterId?: string): Generator<HistoryEntry> {
    for (const { value } of this.entries.getRange({ start: afterId ?? '', snapshot: false })) {
      if (afterId !== undefined && value.id <= afterId) continue;
      yield value;
    }
  }

  /** The newest `limit` entries matching `filter`, newest first. */
  list(filter: HistoryFilter, limit: number, beforeId?: string): HistoryEntry[] {
    const out: HistoryEntry[] = [];
    if (limit <= 0) return out;
    for (const e of this.newestFirst(beforeId)) {
      if (filter.sinceMs !== undefined && e.at < filter.sinceMs) break;
      if (!matchesFilter(e, filter)) continue;
      out.push(e);
      if (out.length >= limit) break;
    }
    return out;
  }

  byOperation(name: string): HistoryEntry | undefined {
    const id = this.index.get(['o', name]);
    return id ? this.entries.get(id) : undefined;
  }

  /** Ids under an index prefix, newest first. */
  private *ids(prefix: IndexKey, beforeId?: string): Generator<string> {
    const start = [...prefix, beforeId ?? END];
    for (const key of this.index.getKeys({ start, end: prefix, reverse: true, snapshot: false })) {
      const id = key[key.length - 1]!;
      if (beforeId !== undefined && id >= beforeId) continue;
      yield id;
    }
  }

  private *entriesOf(prefix: IndexKey, beforeId?: string): Generator<HistoryEntry> {
    for (const id of this.ids(prefix, beforeId)) {
      const e = this.entries.get(id);
      if (e) yield e;
    }
  }

  /** Entries of one action digest ("HASH/SIZE"), newest first. */
  byAction(action: string, beforeId?: string): Generator<HistoryEntry> {
    return this.entriesOf(['a', action], beforeId);
  }

  /** The distinct action digests ("HASH/SIZE") whose hash starts with `prefix`, at most `limit`. */
  actionsWithPrefix(prefix: string, limit = 10): string[] {
    const out: string[] = [];
    let last = '';
    for (const key of this.index.getKeys({ start: ['a', prefix], end: ['a', `${prefix}${END}`], snapshot: false })) {
      const action = key[1]!;
      if (action === last) continue;
      last = action;
      out.push(action);
      if (out.length >= limit) break;
    }
    return out;
  }

  /** Entries of the same target and mnemonic, newest first. */
  byTarget(key: string, beforeId?: string): Generator<HistoryEntry> {
    return this.entriesOf(['t', key], beforeId);
  }

  /** Entries of the same argv[0] and output paths, newest first. */
  byShape(key: string, beforeId?: string): Generator<HistoryEntry> {
    return this.entriesOf(['s', key], beforeId);
  }

  /** Failed Executes, newest first. */
  failures(): Generator<HistoryEntry> {
    return this.entriesOf(['f']);
  }

  /** The oldest entry's time, if any. */
  oldest(): HistoryEntry | undefined {
    for (const e of this.oldestFirst()) return e;
    return undefined;
  }

  /**
   * Remove up to `batchSize` of the oldest entries that are past the retention (more than
   * maxEntries, or older than cutoffMs), in one short transaction. Returns how many went:
   * call again while it returns batchSize.
   */
  async sweep(maxEntries: number, cutoffMs: number, batchSize = 500): Promise<number> {
    const doomed: HistoryEntry[] = [];
    let excess = this.count - maxEntries;
    for (const e of this.oldestFirst()) {
      if (doomed.length >= batchSize) break;
      if (excess <= 0 && e.at >= cutoffMs) break;
      doomed.push(e);
      excess--;
    }
    if (doomed.length === 0) return 0;
    await this.entries.batch(() => {
      for (const e of doomed) {
        void this.entries.remove(e.id);
        if (e.operation && this.index.get(['o', e.operation]) === e.id) void this.index.remove(['o', e.operation]);
        for (const k of indexKeys(e)) void this.index.remove(k);
      }
    });
    this.count = Math.max(0, this.count - doomed.length);
    return doomed.length;
  }
}
