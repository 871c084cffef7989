import type { BlobStore } from '../cas/blob-store.js';
import { Digest } from '../digest/digest.js';
import { re, type Directory } from '../proto.js';
import { protoTimeToMs } from '../util/proto-time.js';

/** One difference between two input trees, by path. */
export interface PathChange {
  path: string;
  change: 'added' | 'removed' | 'changed';
  /** "file", "directory", "symlink", or "file→directory" (and so on) for a change of kind. */
  kind: string;
  /** Digest ("HASH/SIZE"), symlink target or node properties, before and after. */
  before?: string;
  after?: string;
  /** For a change: "content", "executable", "properties", "target", "kind" (comma-separated). */
  what?: string;
}

export interface TreeDiff {
  changes: PathChange[];
  /** Changes found beyond `maxChanges`, not listed. */
  notListed: number;
  /** Parts that could not be compared (a Directory gone from the CAS, a tree too large). */
  problems: string[];
}

type Node =
  | { kind: 'file'; digest: Digest; executable: boolean; props: string }
  | { kind: 'directory'; digest: Digest }
  | { kind: 'symlink'; target: string; props: string };

const propsText = (p: re.INodeProperties | null | undefined): string => {
  const parts = (p?.properties ?? []).map((x) => `${x.name}=${x.value}`);
  if (p?.mtime) parts.push(`mtime=${new Date(Math.floor(protoTimeToMs(p.mtime)!)).toISOString()}`);
  if (p?.unixMode) parts.push(`unix_mode=${(p.unixMode.value ?? 0).toString(8)}`);
  return parts.sort().join(' ');
};

function nodesOf(dir: Directory, fn: Digest['fn']): Map<string, Node> {
  const out = new Map<string, Node>();
  for (const f of dir.files) out.set(f.name ?? '', { kind: 'file', digest: Digest.fromProto(f.digest, fn), executable: !!f.isExecutable, props: propsText(f.nodeProperties) });
  for (const d of dir.directories) out.set(d.name ?? '', { kind: 'directory', digest: Digest.fromProto(d.digest, fn) });
  for (const s of dir.symlinks) out.set(s.name ?? '', { kind: 'symlink', target: s.target ?? '', props: propsText(s.nodeProperties) });
  return out;
}

const join = (path: string, name: string): string => (path ? `${path}/${name}` : name);
const text = (d: Digest): string => d.toString();

/**
 * The differences between two input roots, path by path: added, removed and changed files
 * (with both digests), symlinks and directories. Subtrees with the same digest are equal
 * and never read (a Merkle tree); added and removed directories are listed file by file.
 */
export async function diffTrees(cas: BlobStore, before: Digest, after: Digest, opts: { maxChanges?: number; maxDirectories?: number } = {}): Promise<TreeDiff> {
  const maxChanges = opts.maxChanges ?? 1000;
  let budget = opts.maxDirectories ?? 200_000;
  const out: TreeDiff = { changes: [], notListed: 0, problems: [] };
  const cache = new Map<string, Directory | null>();
  const load = async (d: Digest, path: string): Promise<Directory | undefined> => {
    if (!cache.has(d.key)) {
      const bytes = await cas.get(d);
      let dir: Directory | null = null;
      if (bytes) {
        try {
          dir = re.Directory.decode(bytes);
        } catch {
          out.problems.push(`the Directory at /${path} (${d}) is not a valid Directory message`);
        }
      }
      cache.set(d.key, dir);
    }
    const dir = cache.get(d.key);
    if (!dir && !out.problems.some((p) => p.includes(`(${d})`))) out.problems.push(`the Directory at /${path} (${d}) is no longer in the CAS: differences below it are not listed`);
    return dir ?? undefined;
  };
  const emit = (c: PathChange): void => {
    if (out.changes.length < maxChanges) out.changes.push(c);
    else out.notListed++;
  };
  /** Every entry under a directory that only one side has, as added or removed. */
  const whole = async (d: Digest, path: string, change: 'added' | 'removed'): Promise<void> => {
    if (--budget < 0) return;
    const dir = await load(d, path);
    if (!dir) return;
    const nodes = nodesOf(dir, d.fn);
    if (nodes.size === 0) emit({ path: `${path}/`, change, kind: 'directory', [change === 'added' ? 'after' : 'before']: text(d) });
    for (const name of [...nodes.keys()].sort()) {
      const n = nodes.get(name)!;
      const p = join(path, name);
      if (n.kind === 'directory') await whole(n.digest, p, change);
      else emit({ path: p, change, kind: n.kind, [change === 'added' ? 'after' : 'before']: n.kind === 'file' ? text(n.digest) : n.target });
    }
  };
  const compare = async (a: Digest, b: Digest, path: string): Promise<void> => {
    if (a.equals(b)) return;
    if (--budget < 0) {
      if (budget === -1) out.problems.push(`the trees differ in more than ${opts.maxDirectories ?? 200_000} directories: the rest is not compared`);
      return;
    }
    const [da, db] = [await load(a, path), await load(b, path)];
    if (!da || !db) return;
    const pa = propsText(da.nodeProperties);
    const pb = propsText(db.nodeProperties);
    if (pa !== pb) emit({ path: path ? `${path}/` : '/', change: 'changed', kind: 'directory', before: pa, after: pb, what: 'properties' });
    const na = nodesOf(da, a.fn);
    const nb = nodesOf(db, b.fn);
    const names = [...new Set([...na.keys(), ...nb.keys()])].sort();
    for (const name of names) {
      const x = na.get(name);
      const y = nb.get(name);
      const p = join(path, name);
      if (!x) {
        if (y!.kind === 'directory') await whole(y!.digest, p, 'added');
        else emit({ path: p, change: 'added', kind: y!.kind, after: y!.kind === 'file' ? text(y!.digest) : y!.target });
      } else if (!y) {
        if (x.kind === 'directory') await whole(x.digest, p, 'removed');
        else emit({ path: p, change: 'removed', kind: x.kind, before: x.kind === 'file' ? text(x.digest) : x.target });
      } else if (x.kind !== y.kind) {
        const show = (n: Node): string => (n.kind === 'symlink' ? n.target : text(n.digest));
        emit({ path: p, change: 'changed', kind: `${x.kind}→${y.kind}`, before: show(x), after: show(y), what: 'kind' });
      } else if (x.kind === 'directory' && y.kind === 'directory') {
        await compare(x.digest, y.digest, p);
      } else if (x.kind === 'file' && y.kind === 'file') {
        const what = [!x.digest.equals(y.digest) && 'content', x.executable !== y.executable && 'executable', x.props !== y.props && 'properties'].filter(Boolean) as string[];
        if (what.length === 0) continue;
        const describe = (n: typeof x): string => [text(n.digest), what.includes('executable') ? (n.executable ? 'executable' : 'not executable') : '', what.includes('properties') ? n.props : ''].filter(Boolean).join(' ');
        emit({ path: p, change: 'changed', kind: 'file', before: describe(x), after: describe(y), what: what.join(',') });
      } else if (x.kind === 'symlink' && y.kind === 'symlink') {
        const what = [x.target !== y.target && 'target', x.props !== y.props && 'properties'].filter(Boolean) as string[];
        if (what.length > 0) emit({ path: p, change: 'changed', kind: 'symlink', before: [x.target, what.includes('properties') ? x.props : ''].filter(Boolean).join(' '), after: [y.target, what.includes('properties') ? y.props : ''].filter(Boolean).join(' '), what: what.join(',') });
      }
    }
  };
  await compare(before, after, '');
  return out;
}

/** What an input root holds, as staged: counts, bytes and the largest files. */
export interface TreeSummary {
  files: number;
  directories: number;
  symlinks: number;
  bytes: number;
  largest: Array<{ path: string; bytes: number }>;
  complete: boolean;
  problem?: string;
}

/**
 * Walk an input root path by path (a Directory used at several paths counts at each, as
 * staging writes it), up to `maxEntries` entries.
 */
export async function summarizeTree(cas: BlobStore, root: Digest, opts: { maxEntries?: number; largest?: number } = {}): Promise<TreeSummary> {
  const maxEntries = opts.maxEntries ?? 1_000_000;
  const keep = opts.largest ?? 10;
  const s: TreeSummary = { files: 0, directories: 0, symlinks: 0, bytes: 0, largest: [], complete: true };
  const cache = new Map<string, Directory | null>();
  const stack: Array<{ digest: Digest; path: string }> = [{ digest: root, path: '' }];
  let entries = 0;
  while (stack.length > 0) {
    const { digest, path } = stack.pop()!;
    if (!cache.has(digest.key)) {
      const bytes = await cas.get(digest);
      let dir: Directory | null = null;
      try {
        dir = bytes ? re.Directory.decode(bytes) : null;
      } catch {
        dir = null;
      }
      cache.set(digest.key, dir);
    }
    const dir = cache.get(digest.key);
    if (!dir) {
      s.complete = false;
      s.problem ??= `the Directory at /${path} (${digest}) is no longer in the CAS`;
      continue;
    }
    for (const f of dir.files) {
      const size = Number(f.digest?.sizeBytes ?? 0);
      s.files++;
      s.bytes += size;
      if (s.largest.length < keep || size > s.largest[s.largest.length - 1]!.bytes) {
        s.largest.push({ path: join(path, f.name ?? ''), bytes: size });
        s.largest.sort((a, b) => b.bytes - a.bytes || (a.path < b.path ? -1 : 1));
        if (s.largest.length > keep) s.largest.pop();
      }
    }
    s.symlinks += dir.symlinks.length;
    s.directories += dir.directories.length;
    entries += dir.files.length + dir.symlinks.length + dir.directories.length;
    if (entries > maxEntries) {
      s.complete = false;
      s.problem ??= `more than ${maxEntries} entries: counted the first ones`;
      break;
    }
    for (const d of dir.directories) stack.push({ digest: Digest.fromProto(d.digest, digest.fn), path: join(path, d.name ?? '') });
  }
  return s;
}
