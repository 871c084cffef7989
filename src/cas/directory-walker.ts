import { Digest } from '../digest/digest.js';
import type { DigestFunction } from '../digest/digest-function.js';
import { re, type Directory, type ITree } from '../proto.js';
import { Code, failedPrecondition, invalidArgument, StatusError } from '../util/status-error.js';
import type { BlobStore } from './blob-store.js';

/** Read and decode one Directory blob; absent → NOT_FOUND-like precondition error naming it. */
export async function readDirectory(store: BlobStore, digest: Digest, what = 'Directory'): Promise<Directory> {
  const bytes = await store.get(digest);
  if (!bytes) {
    throw failedPrecondition(`${what} ${digest} is not in the CAS`, [{ type: 'MISSING', subject: digest.blobPath }]);
  }
  try {
    return re.Directory.decode(bytes);
  } catch (err) {
    throw invalidArgument(`${what} ${digest} is not a valid Directory message: ${(err as Error).message}`);
  }
}

/** Digests of the files, and of the child Directories, that a Directory refers to. */
export function directoryReferences(dir: re.IDirectory, fn: DigestFunction): { files: Digest[]; directories: Digest[] } {
  const files = (dir.files ?? []).map((f) => Digest.fromProto(f.digest, fn, `file "${f.name}"`));
  const directories = (dir.directories ?? []).map((d) => Digest.fromProto(d.digest, fn, `directory "${d.name}"`));
  return { files, directories };
}

export interface WalkOptions {
  /** Most distinct directories in the tree; past it, `tooLarge` (default RESOURCE_EXHAUSTED). */
  maxDirectories?: number;
  /** Deepest level below the root visited; past it, `tooLarge`. */
  maxDepth?: number;
  /** Leave absent subtrees out instead of failing with FAILED_PRECONDITION (GetTree: "return the portion present"). */
  skipMissing?: boolean;
  tooLarge?: (limit: 'depth' | 'directories', value: number) => Error;
}

/**
 * Visit every Directory under a root, breadth first, each distinct digest once, in an order
 * that depends only on the tree (GetTree's page tokens count positions in it).
 */
export async function* walkDirectories(store: BlobStore, root: Digest, options: WalkOptions = {}): AsyncGenerator<{ digest: Digest; directory: Directory }> {
  const tooLarge =
    options.tooLarge ??
    ((limit, value) => new StatusError(8, `tree under ${root} has more than ${value} ${limit === 'depth' ? 'levels' : 'directories'}`));
  const seen = new Set<string>([root.key]);
  let frontier = [root];
  for (let level = 0; frontier.length > 0; level++) {
    if (options.maxDepth !== undefined && level > options.maxDepth) throw tooLarge('depth', options.maxDepth);
    const next: Digest[] = [];
    for (const digest of frontier) {
      let directory: Directory;
      try {
        directory = await readDirectory(store, digest);
      } catch (err) {
        if (options.skipMissing && err instanceof StatusError && err.code === Code.FAILED_PRECONDITION) continue;
        throw err;
      }
      yield { digest, directory };
      for (const child of directoryReferences(directory, digest.fn).directories) {
        if (!seen.has(child.key)) {
          seen.add(child.key);
          // Counted when found, not when read: a wide directory cannot make the walk hold more.
          if (options.maxDirectories && seen.size > options.maxDirectories) throw tooLarge('directories', options.maxDirectories);
          next.push(child);
        }
      }
    }
    frontier = next;
  }
}

/** Every file digest a Tree message refers to, and its directory count. */
export function treeFileDigests(tree: ITree, fn: DigestFunction): Digest[] {
  const out: Digest[] = [];
  for (const dir of [tree.root ?? {}, ...(tree.children ?? [])]) out.push(...directoryReferences(dir, fn).files);
  return out;
}
