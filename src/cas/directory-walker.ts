import { Digest } from '../digest/digest.js';
import type { DigestFunction } from '../digest/digest-function.js';
import { re, type Directory, type ITree } from '../proto.js';
import { Code, failedPrecondition, invalidArgument, StatusError } from '../util/status-error.js';
import type { BlobStore, StoreCallOptions } from './blob-store.js';

/** Read and decode one Directory blob; absent → NOT_FOUND-like precondition error naming it. */
export function readDirectory(store: BlobStore, digest: Digest, what = 'Directory', options: StoreCallOptions = {}): Promise<Directory> {
  return readNamedDirectory(store, digest, `${what} ${digest}`, options);
}

/** readDirectory, with the whole name errors use ("input Directory abc…/12 at "/usr""). */
async function readNamedDirectory(store: BlobStore, digest: Digest, name: string, options: StoreCallOptions): Promise<Directory> {
  const bytes = await store.get(digest, options);
  if (!bytes) {
    throw failedPrecondition(`${name} is not in the CAS`, [{ type: 'MISSING', subject: digest.blobPath }]);
  }
  try {
    return re.Directory.decode(bytes);
  } catch (err) {
    throw invalidArgument(`${name} is not a valid Directory message: ${(err as Error).message}`);
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
  /** Told of each absent Directory; the walk leaves its subtree out and goes on (input roots: report them all). */
  onMissing?: (digest: Digest, path: string) => void;
  /** The error for a tree past a limit; `path` is a directory at that depth (for depth). */
  tooLarge?: (limit: 'depth' | 'directories', value: number, path: string) => Error;
  /** How a Directory is named in an error about its blob (default "Directory <digest>"). */
  describe?: (digest: Digest, path: string) => string;
  signal?: AbortSignal;
}

export interface WalkedDirectory {
  digest: Digest;
  directory: Directory;
  /** Where the walk first found it, relative to the root ("" for the root, "a/b" below). */
  path: string;
}

/**
 * Visit every Directory under a root, breadth first, each distinct digest once, in an order
 * that depends only on the tree (GetTree's page tokens count positions in it). The one walker
 * of the code base: GetTree, input roots, completeness checks and gc use it.
 */
export async function* walkDirectories(store: BlobStore, root: Digest, options: WalkOptions = {}): AsyncGenerator<WalkedDirectory> {
  const tooLarge =
    options.tooLarge ??
    ((limit, value) => new StatusError(8, `tree under ${root} has more than ${value} ${limit === 'depth' ? 'levels' : 'directories'}`));
  const seen = new Set<string>([root.key]);
  let frontier: Array<{ digest: Digest; path: string }> = [{ digest: root, path: '' }];
  for (let level = 0; frontier.length > 0; level++) {
    if (options.maxDepth !== undefined && level > options.maxDepth) throw tooLarge('depth', options.maxDepth, frontier[0]!.path);
    const next: typeof frontier = [];
    for (const { digest, path } of frontier) {
      options.signal?.throwIfAborted();
      let directory: Directory;
      try {
        directory = await readNamedDirectory(store, digest, options.describe?.(digest, path) ?? `Directory ${digest}`, { signal: options.signal });
      } catch (err) {
        if ((options.skipMissing || options.onMissing) && err instanceof StatusError && err.code === Code.FAILED_PRECONDITION) {
          options.onMissing?.(digest, path);
          continue;
        }
        throw err;
      }
      yield { digest, directory, path };
      const children = directoryReferences(directory, digest.fn).directories;
      for (let i = 0; i < children.length; i++) {
        const child = children[i]!;
        if (!seen.has(child.key)) {
          seen.add(child.key);
          // Counted when found, not when read: a wide directory cannot make the walk hold more.
          if (options.maxDirectories && seen.size > options.maxDirectories) throw tooLarge('directories', options.maxDirectories, path);
          const name = directory.directories[i]!.name ?? '';
          next.push({ digest: child, path: path ? `${path}/${name}` : name });
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
