import type { ActionCache } from '../ac/action-cache.js';
import type { BlobStore } from '../cas/blob-store.js';
import type { HistoryConfig } from '../config/config.js';
import { Digest } from '../digest/digest.js';
import { digestFunctionForHashLength, digestFunctionFromName } from '../digest/digest-function.js';
import { InstanceName } from '../digest/instance-name.js';
import { reexec } from '../gen/proto.js';
import type { re } from '../proto.js';
import { failedPrecondition, invalidArgument, notFound } from '../util/status-error.js';
import { resultOf, type HistoryEntry } from './entry.js';
import { effectivePlatform, explainAction, loadSide, type ActionSide, type Explanation } from './explain.js';
import { entryDigest, type FailedActionKeeper } from './failed-actions.js';
import { matchesFilter, type HistoryFilter, type HistoryStore } from './history-store.js';
import type { HistoryRecorder } from './recorder.js';
import { summarizeTree } from './tree-diff.js';
import { entryToWire, propsToWire, timingsToWire } from './wire.js';
import { protoTimeToMs } from '../util/proto-time.js';

/** The daemon's sandbox settings `reexec shell` must repeat. */
export interface SandboxSettings {
  /** Paths hidden from host-tools actions besides the built-in ones (execution.host-tools.hide). */
  hide: string[];
  /** Host paths actions never reach, whatever expose says: the data dir, unix sockets, token file, TLS keys. */
  hideFiles: string[];
  /** What host-tools actions see as "/" (undefined: the host's own). */
  hostToolsRoot?: string;
}

export interface ActionHistoryDeps {
  store: HistoryStore;
  recorder: HistoryRecorder;
  cas: BlobStore;
  ac: ActionCache;
  config: HistoryConfig;
  keeper?: FailedActionKeeper;
  sandbox?: SandboxSettings;
}

/** What a reference (operation name, action digest or hash prefix) names. */
export interface Resolved {
  /** The entry: the operation's, or the newest of the action. Absent: only in the CAS. */
  entry?: HistoryEntry;
  digest: Digest;
  instance: string;
  /** Other entries of the same action. */
  otherEntries: number;
}

const DEFAULT_TAIL = 4096;
const MAX_TAIL = 1024 * 1024;

const days = (s: number): string => (s % 86400 === 0 ? `${s / 86400}d` : s % 3600 === 0 ? `${s / 3600}h` : `${s}s`);

/**
 * The action history as the Admin API serves it: listing and following entries, and looking
 * into one action (show), why it missed the cache (explain), and what `reexec shell` needs.
 * Everything recorded stays readable after the blobs it names are evicted; what is gone is
 * said, with how to keep it.
 */
export class ActionHistory {
  constructor(private readonly deps: ActionHistoryDeps) {}

  private get store(): HistoryStore {
    return this.deps.store;
  }

  /** How the history is kept, for messages about what is not (or no longer) there. */
  retentionText(): string {
    const { maxEntries, maxAgeSeconds, keepFailed } = this.deps.config;
    const oldest = this.store.oldest();
    const since = oldest ? `; the oldest entry now is from ${new Date(oldest.at).toISOString()}` : '';
    return (
      `the history keeps the newest ${maxEntries} entries for at most ${days(maxAgeSeconds)} (history.max-entries, history.max-age)${since}, ` +
      `and the blobs of the newest ${keepFailed} failed actions (history.keep-failed): raise these in the config to keep more`
    );
  }

  /** Find what `ref` names. NOT_FOUND or INVALID_ARGUMENT (ambiguous, malformed) say why. */
  async resolve(ref: string, what = 'ref'): Promise<Resolved> {
    await this.deps.recorder.flush();
    const r = ref.trim();
    if (!r) throw invalidArgument(`${what} is empty: give an operation name or an action digest (HASH/SIZE, or the start of a recorded hash)`, what);
    if (/(^|\/)operations\//.test(r)) {
      const entry = this.store.byOperation(r);
      if (!entry) throw notFound(`operation ${r} is not in the action history (${this.retentionText()})`);
      return { entry, digest: entryDigest(entry, entry.action, what), instance: entry.instance, otherEntries: this.countOthers(entry) };
    }
    const m = /^(?:([a-z0-9]+):)?([0-9a-f]+)(?:\/([0-9]+))?$/i.exec(r);
    if (!m) throw invalidArgument(`${what} "${r}" is neither an operation name (operations/UUID) nor an action digest (HASH/SIZE, or the start of a recorded hash)`, what);
    const [, fnName, hashRaw, size] = m;
    const hash = hashRaw!.toLowerCase();
    const fn = fnName ? digestFunctionFromName(fnName) : digestFunctionForHashLength(hash.length);
    if (!fn) throw invalidArgument(`${what} "${r}": unknown digest function "${fnName}"`, what);
    if (size !== undefined) {
      const digest = Digest.of(fn, hash, Number(size), what);
      const entry = this.newestOf(digest.toString());
      if (entry) return { entry, digest, instance: entry.instance, otherEntries: this.countOthers(entry) };
      if ((await this.deps.cas.findMissing([digest])).length === 0) return { digest, instance: '', otherEntries: 0 };
      throw notFound(`action ${digest} is not in the action history, and its Action is not in the CAS (evicted, or never uploaded here): ${this.retentionText()}`);
    }
    if (hash.length < 4) throw invalidArgument(`${what} "${r}" is too short: give at least 4 hex digits of a recorded action's hash, or HASH/SIZE`, what);
    const matches = this.store.actionsWithPrefix(hash, 6);
    if (matches.length === 0) {
      const full = hash.length === fn.hexLength ? ' (with the whole hash, give the size too: HASH/SIZE)' : '';
      throw notFound(`no action whose hash starts with ${hash} is in the action history${full}: ${this.retentionText()}`);
    }
    if (matches.length > 1) {
      throw invalidArgument(`${what} "${r}" matches several recorded actions (${matches.slice(0, 5).join(', ')}${matches.length > 5 ? ', …' : ''}): give more of the hash`, what);
    }
    const entry = this.newestOf(matches[0]!)!;
    return { entry, digest: entryDigest(entry, entry.action, what), instance: entry.instance, otherEntries: this.countOthers(entry) };
  }

  /** The newest Execute of an action (it says the most), else its newest lookup. */
  private newestOf(action: string): HistoryEntry | undefined {
    let newest: HistoryEntry | undefined;
    let n = 0;
    for (const e of this.store.byAction(action)) {
      newest ??= e;
      if (e.kind === 'execute') return e;
      if (++n >= 100) break;
    }
    return newest;
  }

  private countOthers(entry: HistoryEntry): number {
    let n = -1;
    for (const _ of this.store.byAction(entry.action)) if (++n >= 999) break;
    return Math.max(0, n);
  }

  /** The newest `limit` matching entries (newest first, or oldest of them first). */
  async list(filter: HistoryFilter, limit: number, oldestFirst = false): Promise<HistoryEntry[]> {
    await this.deps.recorder.flush();
    const entries = this.store.list(filter, limit);
    return oldestFirst ? entries.reverse() : entries;
  }

  /** Call `onEntry` for every new matching entry until the returned function is called. */
  watch(filter: HistoryFilter, onEntry: (e: HistoryEntry) => void): () => void {
    const listener = (e: HistoryEntry): void => {
      if (matchesFilter(e, filter)) onEntry(e);
    };
    this.deps.recorder.on('entry', listener);
    return () => void this.deps.recorder.off('entry', listener);
  }

  private async tail(digest: Digest | undefined, tailBytes: number): Promise<reexec.admin.v1.ILogTail | undefined> {
    if (!digest) return undefined;
    const offset = Math.max(0, digest.sizeBytes - tailBytes);
    const chunks: Buffer[] = [];
    const stream = digest.sizeBytes === 0 ? [] : await this.deps.cas.read(digest, offset, 0);
    if (!stream) return { digest: digest.toString(), size: digest.sizeBytes, present: false };
    for await (const c of stream) chunks.push(Buffer.from(c));
    return { digest: digest.toString(), size: digest.sizeBytes, tail: Buffer.concat(chunks), present: true };
  }

  /** The ActionResult to show: the one recorded with the entry, else the action cache's. */
  private async resultFor(target: Resolved): Promise<{ result: re.IActionResult; source: string } | undefined> {
    const kept = target.entry ? resultOf(target.entry) : undefined;
    if (kept) return { result: kept, source: 'history' };
    try {
      const cached = await this.deps.ac.get(InstanceName.parse(target.instance), target.digest);
      if (cached) return { result: cached, source: 'action-cache' };
    } catch {
      /* an instance name the cache refuses: nothing cached */
    }
    return undefined;
  }

  async show(ref: string, tailBytes = DEFAULT_TAIL): Promise<reexec.admin.v1.IActionDetails> {
    const target = await this.resolve(ref);
    const tail = Math.min(MAX_TAIL, tailBytes > 0 ? tailBytes : DEFAULT_TAIL);
    const { entry, digest } = target;
    const side = await loadSide(this.deps.cas, digest, entry);
    const missing: string[] = [];
    const out: reexec.admin.v1.IActionDetails = {
      digestFunction: digest.fn.name,
      actionDigest: digest.toString(),
      otherEntries: target.otherEntries,
      ...(entry ? { entry: entryToWire(entry) } : {}),
    };
    if (!side.action) missing.push('Action');
    else {
      const a = side.action;
      out.action = {
        commandDigest: a.commandDigest?.hash ? `${a.commandDigest.hash}/${a.commandDigest.sizeBytes}` : '',
        inputRootDigest: a.inputRootDigest?.hash ? `${a.inputRootDigest.hash}/${a.inputRootDigest.sizeBytes}` : '',
        doNotCache: a.doNotCache,
        saltHex: a.salt?.length ? Buffer.from(a.salt).toString('hex') : '',
        platform: propsToWire(a.platform?.properties ?? []),
        ...(a.timeout && (Number(a.timeout.seconds) || Number(a.timeout.nanos)) ? { timeoutMs: Math.floor(protoTimeToMs(a.timeout)!) } : {}),
      };
      if (!side.command) missing.push('Command');
      if (a.inputRootDigest?.hash) {
        const root = Digest.fromProto(a.inputRootDigest, digest.fn);
        const s = await summarizeTree(this.deps.cas, root);
        if (!s.complete && s.files + s.directories + s.symlinks === 0 && s.problem?.includes('no longer')) missing.push('input root');
        out.inputRoot = { digest: root.toString(), files: s.files, directories: s.directories, symlinks: s.symlinks, bytes: s.bytes, largest: s.largest, complete: s.complete, problem: s.problem ?? '' };
      }
    }
    const c = side.command;
    if (c) {
      out.command = {
        arguments: c.arguments,
        environment: propsToWire(c.environmentVariables),
        workingDirectory: c.workingDirectory,
        outputPaths: c.outputPaths.length ? c.outputPaths : [...c.outputFiles, ...c.outputDirectories],
        platform: propsToWire(effectivePlatform(side)),
      };
    }
    const found = await this.resultFor(target);
    const r = found?.result;
    if (r) {
      const outputs: reexec.admin.v1.IOutputNode[] = [
        ...(r.outputFiles ?? []).map((f) => ({ path: f.path ?? '', kind: 'file', digest: `${f.digest?.hash}/${f.digest?.sizeBytes}`, bytes: Number(f.digest?.sizeBytes ?? 0), executable: !!f.isExecutable })),
        ...(r.outputDirectories ?? []).map((d) => ({ path: d.path ?? '', kind: 'directory', digest: d.treeDigest?.hash ? `${d.treeDigest.hash}/${d.treeDigest.sizeBytes}` : '', bytes: Number(d.treeDigest?.sizeBytes ?? 0) })),
        ...[...(r.outputSymlinks ?? []), ...((r.outputSymlinks ?? []).length ? [] : [...(r.outputFileSymlinks ?? []), ...(r.outputDirectorySymlinks ?? [])])].map((s) => ({ path: s.path ?? '', kind: 'symlink', target: s.target ?? '' })),
      ];
      out.result = {
        exitCode: r.exitCode ?? 0,
        outputs,
        stdoutDigest: r.stdoutDigest?.hash ? `${r.stdoutDigest.hash}/${r.stdoutDigest.sizeBytes}` : '',
        stderrDigest: r.stderrDigest?.hash ? `${r.stderrDigest.hash}/${r.stderrDigest.sizeBytes}` : '',
        worker: r.executionMetadata?.worker ?? '',
        timings: timingsToWire(entry?.timings),
        source: found!.source,
      };
      const missingOutputs = await this.deps.cas.findMissing(
        [...(r.outputFiles ?? []).map((f) => f.digest), ...(r.outputDirectories ?? []).map((d) => d.treeDigest)].flatMap((d) => (d?.hash ? [Digest.fromProto(d, digest.fn)] : [])),
      );
      if (missingOutputs.length > 0) missing.push(`${missingOutputs.length} output(s)`);
    }
    const logDigest = (which: 'stdout' | 'stderr'): Digest | undefined => {
      const text = entry?.[which] ?? (r ? (which === 'stdout' ? out.result?.stdoutDigest : out.result?.stderrDigest) : undefined);
      return text ? Digest.of(digest.fn, text.split('/')[0]!, Number(text.split('/')[1])) : undefined;
    };
    for (const which of ['stdout', 'stderr'] as const) {
      const t = await this.tail(logDigest(which), tail);
      if (!t) continue;
      out[which] = t;
      if (!t.present) missing.push(which);
    }
    out.missing = missing;
    out.kept = !!(entry && this.deps.keeper?.holds(entry.id));
    if (missing.length > 0) {
      const keep = this.deps.config.keepFailed;
      out.note = `${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} no longer in the CAS (evicted): shown is what the history recorded. ` +
        (entry?.failed
          ? `The blobs of the newest ${keep} failed actions are kept from eviction (history.keep-failed); this one is older than that: raise history.keep-failed to keep more.`
          : `Only failed actions' blobs are kept from eviction (the newest ${keep}, history.keep-failed); those of successful ones go when the cache needs room (storage.max-bytes).`);
    }
    return out;
  }

  /** The whole stdout or stderr of an action. */
  async readLog(ref: string, which: string): Promise<AsyncIterable<Uint8Array>> {
    if (which !== 'stdout' && which !== 'stderr') throw invalidArgument(`stream must be "stdout" or "stderr", not "${which}"`, 'stream');
    const target = await this.resolve(ref);
    let text = target.entry?.[which];
    if (!text) {
      const r = (await this.resultFor(target))?.result;
      const d = which === 'stdout' ? r?.stdoutDigest : r?.stderrDigest;
      text = d?.hash ? `${d.hash}/${d.sizeBytes}` : undefined;
    }
    if (!text) throw notFound(`action ${target.digest} has no recorded ${which} (${target.entry?.outcome === 'miss' ? 'it was a cache miss' : 'no result is known for it'})`);
    const d = Digest.of(target.digest.fn, text.split('/')[0]!, Number(text.split('/')[1]));
    if (d.sizeBytes === 0) return (async function* () {})();
    const stream = await this.deps.cas.read(d, 0, 0);
    if (!stream) throw notFound(`the ${which} of action ${target.digest} (${d}) is no longer in the CAS (evicted): ${this.retentionText()}`);
    return stream;
  }

  async explain(ref: string, against?: string): Promise<Explanation> {
    const subject = await this.resolve(ref);
    const a = await loadSide(this.deps.cas, subject.digest, subject.entry);
    let given: ActionSide | undefined;
    if (against) {
      const other = await this.resolve(against, 'against');
      given = await loadSide(this.deps.cas, other.digest, other.entry);
    }
    return explainAction(this.store, this.deps.cas, a, given);
  }

  /** What `reexec shell` needs: the Command, the platform and the daemon's sandbox settings. */
  async prepareShell(ref: string): Promise<reexec.admin.v1.IShellPlan> {
    const target = await this.resolve(ref);
    const side = await loadSide(this.deps.cas, target.digest, target.entry);
    const keep = `Failed actions keep their blobs for the newest ${this.deps.config.keepFailed} of them (history.keep-failed in the config).`;
    if (!side.action) throw failedPrecondition(`the Action of ${target.digest} is no longer in the CAS (evicted): its sandbox cannot be rebuilt. ${keep}`, [{ type: 'MISSING', subject: `blobs/${target.digest}`, description: 'Action' }]);
    if (!side.command) throw failedPrecondition(`the Command of action ${target.digest} is no longer in the CAS (evicted): its sandbox cannot be rebuilt. ${keep}`);
    const c = side.command;
    const root = side.action.inputRootDigest;
    const sandbox = this.deps.sandbox ?? { hide: [], hideFiles: [] };
    return {
      digestFunction: target.digest.fn.name,
      actionDigest: target.digest.toString(),
      instance: target.instance,
      inputRootDigest: root?.hash ? `${root.hash}/${root.sizeBytes}` : '',
      arguments: c.arguments,
      environment: propsToWire(c.environmentVariables),
      workingDirectory: c.workingDirectory,
      outputPaths: c.outputPaths.length ? c.outputPaths : [...c.outputFiles, ...c.outputDirectories],
      platform: propsToWire(effectivePlatform(side)),
      hide: sandbox.hide,
      hideFiles: sandbox.hideFiles,
      hostToolsRoot: sandbox.hostToolsRoot ?? '',
      ...(target.entry ? { entry: entryToWire(target.entry) } : {}),
    };
  }
}
