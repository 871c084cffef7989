import { Digest } from '../digest/digest.js';
import type { DigestFunction } from '../digest/digest-function.js';
import { re, type Directory, type ITree } from '../proto.js';
import { failedPrecondition, invalidArgument, StatusError } from '../util/status-error.js';
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

/**
 * Visit every Directory under a root, breadth first, each distinct digest once. `onMissing`
 * decides what an absent child does (default: throw FAILED_PRECONDITION naming it).
 */
export async function* walkDirectories(
  store: BlobStore,
  root: Digest,
  options: { maxDirectories?: number } = {},
): AsyncGenerator<{ digest: Digest; directory: Directory }> {
  const seen = new Set<string>([root.key]);
  let frontier = [root];
  let count = 0;
  while (frontier.length > 0) {
    const next: Digest[] = [];
    for (const digest of frontier) {
      const directory = await readDirectory(store, digest);
      if (options.maxDirectories && ++count > options.maxDirectories) {
        throw new StatusError(8, `tree under ${root} has more than ${options.maxDirectories} directories`);
      }
      yield { digest, directory };
      for (const child of directoryReferences(directory, digest.fn).directories) {
        if (!seen.has(child.key)) {
          seen.add(child.key);
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
