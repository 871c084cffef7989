import { findMissingInChunks, type BlobStore } from '../cas/blob-store.js';
import { walkDirectories } from '../cas/directory-walker.js';
import { Digest } from '../digest/digest.js';
import type { re, Directory } from '../proto.js';
import { failedPrecondition, invalidArgument, type PreconditionViolation } from '../util/status-error.js';

/** An input root, fetched whole and validated: every Directory by digest key. */
export interface InputTree {
  root: Digest;
  directories: Map<string, Directory>;
  /** Every distinct file digest. */
  files: Map<string, Digest>;
  fileCount: number;
}

const missing = (d: Digest, what: string): PreconditionViolation => ({ type: 'MISSING', subject: d.blobPath, description: what });

function checkName(name: string, where: string): void {
  if (!name || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw invalidArgument(`${where}: invalid entry name ${JSON.stringify(name)} (names may not be empty, ".", "..", or contain "/" or NUL)`);
  }
  if (Buffer.byteLength(name) > 255) throw invalidArgument(`${where}: entry name "${name.slice(0, 40)}…" is longer than 255 bytes, the most a Linux file system allows`);
}

/** REAPI: each list sorted by name, and a name appears once across files, directories and symlinks. */
export function validateDirectory(dir: re.IDirectory, where: string): void {
  const seen = new Set<string>();
  const lists: Array<[string, Array<{ name?: string | null }>]> = [
    ['files', dir.files ?? []],
    ['directories', dir.directories ?? []],
    ['symlinks', dir.symlinks ?? []],
  ];
  for (const [kind, list] of lists) {
    let prev: string | undefined;
    for (const node of list) {
      const name = node.name ?? '';
      checkName(name, where);
      if (prev !== undefined && !(Buffer.compare(Buffer.from(prev), Buffer.from(name)) < 0)) {
        throw invalidArgument(`${where}: ${kind} are not sorted by name or contain a duplicate ("${prev}" then "${name}")`);
      }
      if (seen.has(name)) throw invalidArgument(`${where}: "${name}" appears more than once`);
      seen.add(name);
      prev = name;
    }
  }
  for (const s of dir.symlinks ?? []) {
    if (!s.target) throw invalidArgument(`${where}: symlink "${s.name}" has an empty target`);
    if (s.target.includes('\0')) throw invalidArgument(`${where}: symlink "${s.name}" has a NUL byte in its target`);
    if (Buffer.byteLength(s.target) > 4095) throw invalidArgument(`${where}: symlink "${s.name}" has a target longer than 4095 bytes (PATH_MAX)`);
  }
}

/**
 * Fetch every Directory of an input root, validate them, and check every file blob exists.
 * All missing blobs are reported at once (FAILED_PRECONDITION with one MISSING violation
 * each), so a client can upload them in one go.
 */
export interface TreeLimits {
  maxDirectories?: number;
  /** Deepest nesting below the root (a root with a subdirectory has depth 1). */
  maxDepth?: number;
  /** Files, symlinks and directories as staged: a subtree used twice counts twice. */
  maxEntries?: number;
}

export async function fetchInputTree(cas: BlobStore, root: Digest, limits: TreeLimits = {}): Promise<InputTree> {
  const directories = new Map<string, Directory>();
  const files = new Map<string, Digest>();
  const violations: PreconditionViolation[] = [];
  let fileCount = 0;
  let uniqueEntries = 0;
  const walk = walkDirectories(cas, root, {
    maxDepth: limits.maxDepth,
    onMissing: (digest, path) => violations.push(missing(digest, `Directory at "/${path}"`)),
    describe: (digest, path) => `input Directory ${digest} at "/${path}"`,
    tooLarge: (_limit, value, path) => invalidArgument(`input root ${root} nests directories deeper than ${value} levels (limits.max-tree-depth), e.g. at "/${path}"`),
  });
  for await (const { digest, directory: dir, path } of walk) {
    const where = `input Directory ${digest} at "/${path}"`;
    validateDirectory(dir, where);
    directories.set(digest.key, dir);
    if (limits.maxDirectories && directories.size > limits.maxDirectories) {
      throw invalidArgument(`input root ${root} has more than ${limits.maxDirectories} directories`);
    }
    uniqueEntries += dir.files.length + dir.symlinks.length + dir.directories.length;
    if (limits.maxEntries && uniqueEntries > limits.maxEntries) {
      throw invalidArgument(`input root ${root} has more than ${limits.maxEntries} files, symlinks and directories (limits.max-tree-entries)`);
    }
    for (const f of dir.files) {
      const d = Digest.fromProto(f.digest, root.fn, `${where}: file "${f.name}"`);
      fileCount++;
      files.set(d.key + '/' + d.sizeBytes, d);
    }
    // Checked here, with the path in the message, before the walker reads them.
    for (const sub of dir.directories) Digest.fromProto(sub.digest, root.fn, `${where}: directory "${sub.name}"`);
  }
  for (const d of await findMissingInChunks(cas, [...files.values()])) violations.push(missing(d, 'input file'));
  if (violations.length === 0) checkExpandedSize(root, directories, limits);
  if (violations.length > 0) {
    throw failedPrecondition(`${violations.length} blob(s) of input root ${root} are missing from the CAS: ${violations.slice(0, 5).map((v) => v.subject).join(', ')}${violations.length > 5 ? ', …' : ''}`, violations);
  }
  return { root, directories, files, fileCount };
}

/**
 * Depth and size of the tree as staged: the same Directory can appear under many names (a
 * tree of a few dozen Directory messages can stand for billions of files), so both are
 * computed over the expanded tree, each distinct Directory once (iteratively: no recursion).
 */
function checkExpandedSize(root: Digest, directories: Map<string, Directory>, limits: TreeLimits): void {
  if (limits.maxDepth === undefined && limits.maxEntries === undefined) return;
  const height = new Map<string, number>();
  const entries = new Map<string, number>();
  const childKeys = (d: Directory): string[] => d.directories.map((sub) => Digest.fromProto(sub.digest, root.fn).key);
  const stack: Array<{ key: string; expanded: boolean }> = [{ key: root.key, expanded: false }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (height.has(top.key)) {
      stack.pop();
      continue;
    }
    const dir = directories.get(top.key)!;
    const kids = childKeys(dir);
    if (!top.expanded) {
      top.expanded = true;
      for (const k of kids) if (!height.has(k)) stack.push({ key: k, expanded: false });
      continue;
    }
    stack.pop();
    let h = 0;
    let n = dir.files.length + dir.symlinks.length;
    for (const k of kids) {
      h = Math.max(h, 1 + height.get(k)!);
      n += 1 + entries.get(k)!;
    }
    height.set(top.key, h);
    entries.set(top.key, n);
  }
  if (limits.maxDepth !== undefined && height.get(root.key)! > limits.maxDepth) {
    throw invalidArgument(`input root ${root} nests directories ${height.get(root.key)} levels deep, more than ${limits.maxDepth} (limits.max-tree-depth)`);
  }
  if (limits.maxEntries !== undefined && entries.get(root.key)! > limits.maxEntries) {
    const n = entries.get(root.key)!;
    throw invalidArgument(
      `input root ${root} would stage ${Number.isFinite(n) ? n : 'more than 10^308'} files, symlinks and directories (its Directories repeat), more than ${limits.maxEntries} (limits.max-tree-entries)`,
    );
  }
}

/** The value of a node property, e.g. SubtreeReadOnly. */
export function nodeProperty(dir: re.IDirectory, name: string): string | undefined {
  return dir.nodeProperties?.properties?.find((p) => p.name === name)?.value ?? undefined;
}
