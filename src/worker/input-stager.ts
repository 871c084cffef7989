import { chmod, mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlobStore } from '../cas/blob-store.js';
import type { LocalBlobStore } from '../cas/local-blob-store.js';
import { Digest } from '../digest/digest.js';
import { StagingCacheLayout } from '../store/staging-cache-layout.js';
import type { re } from '../proto.js';
import { internal } from '../util/status-error.js';
import { nodeProperty, type InputTree } from './input-tree.js';
import { protoTimeToMs } from '../util/proto-time.js';
import { asyncFs, syncFs, type FsOps } from './fs-ops.js';

/** A mount the runner applies, in order, after binding the staged root at "/". */
export interface Mount {
  kind: 'ro-bind' | 'bind';
  source: string;
  /** Absolute path inside the sandbox. */
  dest: string;
}

export interface StagedInput {
  /** Host directory that becomes the sandbox's "/" (or the working tree for host-tools). */
  rootDir: string;
  /** The root itself is read-only (SubtreeReadOnly=true on the root Directory). */
  rootReadOnly: boolean;
  mounts: Mount[];
  /** Sandbox-relative paths served from the directory cache (empty mount points on the host side). */
  cachedDirs: Map<string, { digest: Digest; source: string }>;
  /** Files whose content is known without hashing: "dev:ino" of cache files → digest. */
  knownInodes: Map<string, Digest>;
  /** The input root has a writable /tmp of its own (else the runner mounts a tmpfs). */
  tmpWritable: boolean;
}

const READ_ONLY = 'SubtreeReadOnly';

/** Staged with synchronous calls (see FsOps): at most this many directories and files, ... */
const SMALL_TREE_ENTRIES = 128;
/** ... and at most this many bytes of files in all. */
const SMALL_TREE_BYTES = 4 * 1024 * 1024;

function smallTree(tree: InputTree): boolean {
  if (tree.directories.size > SMALL_TREE_ENTRIES) return false;
  // As staged: a Directory that appears under several names is written out each time.
  const memo = new Map<string, { entries: number; bytes: number }>();
  const size = (key: string): { entries: number; bytes: number } => {
    const known = memo.get(key);
    if (known) return known;
    const dir = tree.directories.get(key);
    let entries = 1 + (dir?.files.length ?? 0) + (dir?.symlinks.length ?? 0);
    let bytes = 0;
    for (const f of dir?.files ?? []) bytes += Number(f.digest?.sizeBytes ?? 0);
    for (const sub of dir?.directories ?? []) {
      const s = size(Digest.fromProto(sub.digest, tree.root.fn).key);
      entries += s.entries;
      bytes += s.bytes;
    }
    const r = { entries: Math.min(entries, SMALL_TREE_ENTRIES + 1), bytes: Math.min(bytes, SMALL_TREE_BYTES + 1) };
    memo.set(key, r);
    return r;
  };
  const all = size(tree.root.key);
  return all.entries <= SMALL_TREE_ENTRIES && all.bytes <= SMALL_TREE_BYTES;
}

/**
 * The node properties staging honours (ExecutionCapabilities.supported_node_properties):
 * `SubtreeReadOnly` on Directories (rootfs sandbox), `mtime` and `unix_mode` on files.
 */
export const STAGED_NODE_PROPERTIES = [READ_ONLY, 'mtime', 'unix_mode'] as const;

/**
 * Turns input trees from the CAS into directories on disk. Read-only subtrees (BuildStream's
 * sysroots) are materialised once per Directory digest into a cache and bind-mounted
 * read-only, so an input root seen before costs a few mounts. Writable subtrees get private
 * copies. Either way no action can change the store, the cache or another action's inputs:
 * cache files are only ever exposed through read-only mounts.
 */
export class InputStager {
  private readonly layout: StagingCacheLayout;
  private readonly pending = new Map<string, Promise<string>>();

  constructor(
    private readonly cas: BlobStore,
    private readonly blobs: Pick<LocalBlobStore, 'localFile'>,
    cacheDir: string,
    /**
     * Who actions run as, when the daemon (root) switches to another user for them: what an
     * action gets of its own (directories and private copies) is given to that user, so it can
     * write where the tree is writable and read files whatever their mode; the shared cache stays
     * the daemon's, read-only to everyone.
     */
    private readonly owner?: { uid: number; gid: number },
  ) {
    this.layout = new StagingCacheLayout(cacheDir);
  }

  async stage(tree: InputTree, rootDir: string, options: { honourReadOnly: boolean }): Promise<StagedInput> {
    const fs = smallTree(tree) ? syncFs : asyncFs;
    const staged: StagedInput = { rootDir, rootReadOnly: false, mounts: [], cachedDirs: new Map(), knownInodes: new Map(), tmpWritable: false };
    const pure = new Map<string, boolean>();
    const pureReadOnly = (digest: Digest): boolean => {
      const known = pure.get(digest.key);
      if (known !== undefined) return known;
      const dir = this.dir(tree, digest);
      const result =
        nodeProperty(dir, READ_ONLY) !== 'false' &&
        dir.directories.every((d) => pureReadOnly(Digest.fromProto(d.digest, digest.fn)));
      pure.set(digest.key, result);
      return result;
    };

    const visit = async (digest: Digest, hostPath: string, rel: string, parentRo: boolean): Promise<void> => {
      const dir = this.dir(tree, digest);
      const prop = options.honourReadOnly ? nodeProperty(dir, READ_ONLY) : undefined;
      const ro = prop === 'true' ? true : prop === 'false' ? false : parentRo;
      const isRoot = rel === '';
      if (!isRoot && ro && pureReadOnly(digest)) {
        const cached = await this.cachedDirectory(tree, digest, staged.knownInodes);
        await fs.mkdir(hostPath);
        staged.mounts.push({ kind: 'ro-bind', source: cached, dest: '/' + rel });
        staged.cachedDirs.set(rel, { digest, source: cached });
        return;
      }
      await fs.mkdir(hostPath, { recursive: isRoot });
      await this.own(hostPath, false, fs);
      if (rel === 'tmp' && !ro) staged.tmpWritable = true;
      if (isRoot) staged.rootReadOnly = ro;
      else if (ro !== parentRo) staged.mounts.push({ kind: ro ? 'ro-bind' : 'bind', source: hostPath, dest: '/' + rel });
      await this.writeEntries(dir, digest, hostPath, undefined, fs);
      for (const sub of dir.directories) {
        const name = sub.name ?? "";
        await visit(Digest.fromProto(sub.digest, digest.fn), join(hostPath, name), rel ? `${rel}/${name}` : name, ro);
      }
    };
    await visit(tree.root, rootDir, '', false);
    return staged;
  }

  private dir(tree: InputTree, digest: Digest): re.Directory {
    const d = tree.directories.get(digest.key);
    if (!d) throw internal(`input Directory ${digest} was not fetched`);
    return d;
  }

  /** Files and symlinks of one directory; copies unless `knownInodes` (cache mode: hardlinks). */
  private async writeEntries(dir: re.Directory, dirDigest: Digest, hostPath: string, knownInodes: Map<string, Digest> | undefined, fs: FsOps): Promise<void> {
    await Promise.all(
      dir.files.map(async (f) => {
        const digest = Digest.fromProto(f.digest, dirDigest.fn);
        const target = join(hostPath, f.name ?? "");
        const props = f.nodeProperties;
        const wantsOwnInode = !knownInodes || props?.mtime || props?.unixMode;
        if (wantsOwnInode) {
          // A private copy, straight from the CAS: the shared file cache is for hardlinks only.
          await this.copyBlob(digest, target, fs);
          // Never setuid/setgid: the file lives on the host, where it would run with the
          // daemon's identity (inside the sandbox those bits do nothing anyway: nosuid).
          const mode = props?.unixMode ? (props.unixMode.value ?? 0o644) & 0o1777 : f.isExecutable ? 0o755 : 0o644;
          // Copies made for the shared cache (cache mode: knownInodes) stay the daemon's, and
          // writable by nobody else whatever mode the client asked for: they outlive the action.
          await fs.chmod(target, knownInodes ? mode & ~0o022 : mode);
          if (!knownInodes) await this.own(target, false, fs);
        } else {
          const cacheFile = await this.cacheFile(digest, !!f.isExecutable);
          try {
            await fs.link(cacheFile, target);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'EMLINK') throw err;
            await fs.copyFile(cacheFile, target); // ext4 allows 65,000 links per inode
          }
          const st = await fs.stat(target);
          knownInodes.set(`${st.dev}:${st.ino}`, digest);
        }
        if (props?.mtime) {
          const t = protoTimeToMs(props.mtime)! / 1000;
          await fs.utimes(target, t, t);
        }
      }),
    );
    for (const s of dir.symlinks) {
      const target = join(hostPath, s.name ?? "");
      await fs.symlink(s.target ?? "", target);
      if (!knownInodes) await this.own(target, true, fs);
    }
  }

  /** Give a path of an action's own tree to the user actions run as (no-op without one). */
  async own(path: string, symlink = false, fs: FsOps = asyncFs): Promise<void> {
    if (!this.owner) return;
    await (symlink ? fs.lchown : fs.chown)(path, this.owner.uid, this.owner.gid);
  }

  /** Write a blob's bytes to `target`: a kernel-side copy of a file blob, or the inline bytes. */
  private async copyBlob(digest: Digest, target: string, fs: FsOps): Promise<void> {
    const local = this.blobs.localFile(digest);
    if (local) return fs.copyFile(local, target);
    const data = await this.cas.get(digest);
    if (!data) throw internal(`input blob ${digest} vanished from the CAS while staging`);
    await fs.writeFile(target, data);
  }

  /** A read-only file holding a blob, made once per blob and mode (executable or not). */
  private async cacheFile(digest: Digest, executable: boolean): Promise<string> {
    const path = this.layout.filePath(digest, executable);
    return this.once(`f:${path}`, path, async (tmp) => {
      await this.copyBlob(digest, tmp, asyncFs);
      await chmod(tmp, executable ? 0o555 : 0o444);
      await rename(tmp, path);
    });
  }

  /** A read-only materialisation of a whole Directory, made once per digest. */
  private async cachedDirectory(tree: InputTree, digest: Digest, knownInodes: Map<string, Digest>): Promise<string> {
    const path = this.layout.dirPath(digest);
    return this.once(`d:${digest.key}`, path, async (tmp) => {
      const fill = async (d: Digest, host: string): Promise<void> => {
        const dir = this.dir(tree, d);
        await mkdir(host);
        await this.writeEntries(dir, d, host, knownInodes, asyncFs);
        for (const sub of dir.directories) await fill(Digest.fromProto(sub.digest, d.fn), join(host, sub.name ?? ""));
      };
      await fill(digest, tmp);
      try {
        await rename(tmp, path);
      } catch (err) {
        // Another action made the same directory meanwhile: keep theirs.
        if (!['ENOTEMPTY', 'EEXIST'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
        await rm(tmp, { recursive: true, force: true });
      }
    });
  }

  /** Build `path` through a temporary sibling once, even when many actions ask at once. */
  private async once(key: string, path: string, make: (tmp: string) => Promise<void>): Promise<string> {
    try {
      await stat(path);
      return path;
    } catch {
      /* not made yet */
    }
    let p = this.pending.get(key);
    if (!p) {
      p = (async () => {
        await mkdir(join(path, '..'), { recursive: true });
        const tmp = StagingCacheLayout.tmpPath(path);
        try {
          await make(tmp);
        } catch (err) {
          await rm(tmp, { recursive: true, force: true });
          throw err;
        }
        return path;
      })().finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return p;
  }
}
