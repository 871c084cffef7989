import type { EventEmitter } from 'node:events';
import type { BlobStore } from '../cas/blob-store.js';
import { directoryReferences, walkDirectories } from '../cas/directory-walker.js';
import { Digest } from '../digest/digest.js';
import { digestFunctionFromName } from '../digest/digest-function.js';
import type { InUseDigests } from '../gc/in-use-digests.js';
import { re } from '../proto.js';
import type { Logger } from '../util/logger.js';
import { resultOf, type HistoryEntry } from './entry.js';
import type { HistoryStore } from './history-store.js';

/** Most blobs held for one failed action (an input root of a whole sysroot has tens of thousands). */
const MAX_KEYS_PER_ACTION = 200_000;

/** "HASH/SIZE" of an entry → a Digest of its digest function. */
export function entryDigest(entry: Pick<HistoryEntry, 'digestFunction'>, text: string, field = 'digest'): Digest {
  const fn = digestFunctionFromName(entry.digestFunction);
  const [hash, size] = text.split('/');
  if (!fn) throw new Error(`unknown digest function "${entry.digestFunction}"`);
  return Digest.of(fn, hash ?? '', Number(size), field);
}

/**
 * Every blob needed to inspect and re-run a recorded action, as far as the CAS still holds
 * them: Action, Command, the input root's Directories and files, stdout, stderr, output files
 * and output Trees (with the files they list).
 */
export async function actionClosure(cas: BlobStore, entry: HistoryEntry, maxKeys = MAX_KEYS_PER_ACTION): Promise<string[]> {
  const keys = new Set<string>();
  const add = (d: Digest | undefined): void => {
    if (d && keys.size < maxKeys) keys.add(d.key);
  };
  const fn = digestFunctionFromName(entry.digestFunction);
  if (!fn) return [];
  const parse = (d: re.IDigest | null | undefined): Digest | undefined => {
    try {
      return d?.hash ? Digest.fromProto(d, fn) : undefined;
    } catch {
      return undefined;
    }
  };
  const actionDigest = entryDigest(entry, entry.action);
  add(actionDigest);
  for (const t of [entry.stdout, entry.stderr]) if (t) add(entryDigest(entry, t));
  const bytes = await cas.get(actionDigest);
  if (bytes) {
    try {
      const action = re.Action.decode(bytes);
      add(parse(action.commandDigest));
      const root = parse(action.inputRootDigest);
      if (root) {
        add(root);
        for await (const { digest, directory } of walkDirectories(cas, root)) {
          add(digest);
          for (const f of directoryReferences(directory, fn).files) add(f);
          if (keys.size >= maxKeys) break;
        }
      }
    } catch {
      /* a missing Directory or a malformed blob: hold what was found */
    }
  }
  const result = resultOf(entry);
  for (const f of result?.outputFiles ?? []) add(parse(f.digest));
  for (const d of result?.outputDirectories ?? []) {
    const tree = parse(d.treeDigest);
    add(tree);
    add(parse(d.rootDirectoryDigest));
    const data = tree ? await cas.get(tree).catch(() => undefined) : undefined;
    if (!data) continue;
    try {
      const t = re.Tree.decode(data);
      for (const dir of [t.root ?? {}, ...(t.children ?? [])]) for (const f of directoryReferences(dir, fn).files) add(f);
    } catch {
      /* not a Tree: the tree blob alone is held */
    }
  }
  return [...keys];
}

/**
 * Keeps the blobs of the newest `keep` failed actions from eviction, so that `reexec show`
 * and `reexec shell` still work on them: holds them in the garbage collector's in-use set
 * (one holder per entry), and lets the oldest go as new failures come.
 */
export class FailedActionKeeper {
  /** Held entries, newest first. */
  private held: string[] = [];
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly cas: BlobStore,
    private readonly inUse: InUseDigests,
    private readonly keep: number,
    private readonly log?: Logger,
  ) {}

  static holder(entry: Pick<HistoryEntry, 'id'>): string {
    return `history:${entry.id}`;
  }

  /** Hold the newest failures already stored, then every new one an emitter reports ('entry'). */
  start(store: HistoryStore, recorder?: EventEmitter): Promise<void> {
    recorder?.on('entry', (e: HistoryEntry) => {
      if (e.failed) this.add(e);
    });
    const existing: HistoryEntry[] = [];
    for (const e of store.failures()) {
      if (existing.length >= this.keep) break;
      existing.push(e);
    }
    for (const e of existing.reverse()) this.add(e);
    return this.queue;
  }

  /** Entries whose blobs are held, newest first. */
  get entries(): readonly string[] {
    return this.held;
  }

  /** Hold one more failure (its closure is computed in the background, one at a time). */
  add(entry: HistoryEntry): Promise<void> {
    if (this.keep <= 0) return this.queue;
    this.queue = this.queue.then(async () => {
      if (this.closed) return;
      try {
        const keys = await actionClosure(this.cas, entry);
        this.inUse.hold(FailedActionKeeper.holder(entry), keys);
        this.held.unshift(entry.id);
        for (const old of this.held.splice(this.keep)) this.inUse.release(`history:${old}`);
      } catch (err) {
        this.log?.warn(`action history: could not keep the blobs of failed action ${entry.action}: ${(err as Error).message}`);
      }
    });
    return this.queue;
  }

  /** Whether an entry's blobs are held. */
  holds(id: string): boolean {
    return this.held.includes(id);
  }

  async stop(): Promise<void> {
    this.closed = true;
    await this.queue;
  }
}
