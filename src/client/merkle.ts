import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Digest } from '../digest/digest.js';
import type { DigestFunction } from '../digest/digest-function.js';
import { re } from '../proto.js';

/** A Merkle tree built from a local directory: the root digest and every blob by digest key. */
export interface LocalTree {
  root: Digest;
  blobs: Map<string, { digest: Digest; data: Uint8Array }>;
}

export interface TreeOptions {
  /** Node properties for the Directory at a relative path ("" = root), e.g. SubtreeReadOnly. */
  directoryProperties?: (rel: string) => Array<{ name: string; value: string }> | undefined;
  /** The digest function to address blobs with (default SHA-256). */
  fn?: DigestFunction;
}

/**
 * Turn a directory on disk into REAPI Directory messages (what casupload does): sorted entries,
 * executable bits, symlinks kept as symlinks.
 */
export async function treeFromDirectory(path: string, opts: TreeOptions = {}): Promise<LocalTree> {
  const blobs = new Map<string, { digest: Digest; data: Uint8Array }>();
  const add = (data: Uint8Array): Digest => {
    const digest = Digest.compute(data, opts.fn);
    blobs.set(digest.key, { digest, data });
    return digest;
  };
  const walk = async (host: string, rel: string): Promise<Digest> => {
    const dir: re.IDirectory = { files: [], directories: [], symlinks: [] };
    const names = (await readdir(host)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    for (const name of names) {
      const p = join(host, name);
      const st = await lstat(p);
      const childRel = rel ? `${rel}/${name}` : name;
      if (st.isSymbolicLink()) dir.symlinks!.push({ name, target: await readlink(p) });
      else if (st.isDirectory()) dir.directories!.push({ name, digest: (await walk(p, childRel)).toProto() });
      else if (st.isFile()) dir.files!.push({ name, digest: add(await readFile(p)).toProto(), isExecutable: (st.mode & 0o111) !== 0 });
    }
    const props = opts.directoryProperties?.(rel);
    if (props && props.length) dir.nodeProperties = { properties: props };
    return add(re.Directory.encode(dir).finish());
  };
  const root = await walk(path, '');
  return { root, blobs };
}
