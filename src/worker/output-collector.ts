import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Stats } from 'node:fs';
import type { BlobStore } from '../cas/blob-store.js';
import { Digest } from '../digest/digest.js';
import type { DigestFunction } from '../digest/digest-function.js';
import { re } from '../proto.js';
import type { InputTree } from './input-tree.js';
import type { StagedInput } from './input-stager.js';
import { resolveInRoot, type RootView } from './root-path.js';
import { protoTimeFromMs } from '../util/proto-time.js';

export interface CollectOptions {
  fn: DigestFunction;
  /** output_node_properties: "mtime", "unix_mode". */
  nodeProperties: readonly string[];
  /** Sandbox-relative paths the server created as mount points: not part of any output. */
  ignore: ReadonlySet<string>;
  /** Where the input root is inside the sandbox ("/" unless host-tools): symlinks resolve against it. */
  mountPoint?: string;
}

export interface CollectedOutputs {
  outputFiles: re.IOutputFile[];
  outputDirectories: re.IOutputDirectory[];
  outputSymlinks: re.IOutputSymlink[];
  /**
   * Outputs of the wrong type, each a sentence naming it: an `output_files` entry that is a
   * directory (or a symlink to one), an `output_directories` entry that is a file (or a
   * symlink to one). REAPI: the server returns FAILED_PRECONDITION, never drops them silently.
   */
  wrongTypes: string[];
}

/** Blobs up to this size are read whole; larger ones are hashed, then streamed into the CAS. */
const WHOLE_FILE_BYTES = 4 * 1024 * 1024;
const PARALLEL_FILES = 16;

const byName = (a: { name?: string | null }, b: { name?: string | null }): number => Buffer.compare(Buffer.from(a.name ?? ''), Buffer.from(b.name ?? ''));

/**
 * Reads what an action left behind, on the host side, into the CAS: files, symlinks (never
 * followed), and directories as both a Tree and one Directory blob each. Read-only inputs
 * served from the directory cache are not hashed again: their digests are known.
 */
export class OutputCollector {
  constructor(
    private readonly cas: BlobStore,
    private readonly staged: StagedInput,
    private readonly input: InputTree,
    private readonly opts: CollectOptions,
  ) {}

  /** Host path of a sandbox-relative path ("" = root), looking through cache mounts. */
  private hostPath(rel: string): string {
    for (const [prefix, c] of this.staged.cachedDirs) {
      if (rel === prefix || rel.startsWith(prefix + '/')) return join(c.source, rel.slice(prefix.length));
    }
    return join(this.staged.rootDir, rel);
  }

  /**
   * Collect each requested path. `paths` are sandbox-relative and normalised; `reported` is
   * what the client wrote, echoed back verbatim. Missing paths are skipped.
   */
  async collect(outputs: Array<{ rel: string; reported: string; kind: 'any' | 'file' | 'directory' }>): Promise<CollectedOutputs> {
    const result: CollectedOutputs = { outputFiles: [], outputDirectories: [], outputSymlinks: [], wrongTypes: [] };
    const view = this.view();
    for (const o of outputs) {
      // Symlinks on the way resolve inside the sandbox, never on the host: an output path
      // through `x -> /etc` must not read the host's /etc. Paths that leave the root are skipped.
      const rel = await resolveInRoot(view, o.rel);
      if (rel === undefined) continue;
      const host = this.hostPath(rel);
      let st: Stats;
      try {
        st = await lstat(host);
      } catch {
        continue;
      }
      const field = o.kind === 'file' ? 'output_files' : 'output_directories';
      if (st.isSymbolicLink()) {
        const target = await this.symlinkTargetType(rel);
        if (o.kind === 'file' && target === 'directory') {
          result.wrongTypes.push(`output "${o.reported}" is listed in output_files but is a symlink to a directory`);
          continue;
        }
        if (o.kind === 'directory' && target === 'file') {
          result.wrongTypes.push(`output "${o.reported}" is listed in output_directories but is a symlink to a file`);
          continue;
        }
        result.outputSymlinks.push({ path: o.reported, target: await readlink(host), nodeProperties: this.props(st, 'symlink') });
      } else if (st.isDirectory()) {
        if (o.kind === 'file') {
          result.wrongTypes.push(`output "${o.reported}" is listed in ${field} but is a directory`);
          continue;
        }
        const { root, children } = await this.directory(rel, host);
        const rootDigest = await this.store(re.Directory.encode(root).finish());
        const unique = new Map<string, re.IDirectory>();
        for (const c of children) unique.set(c.digest.key, c.directory);
        const tree = re.Tree.encode({ root, children: [...unique.values()] }).finish();
        const treeDigest = await this.store(tree);
        result.outputDirectories.push({ path: o.reported, treeDigest: treeDigest.toProto(), rootDirectoryDigest: rootDigest.toProto(), isTopologicallySorted: false });
      } else if (st.isFile()) {
        if (o.kind === 'directory') {
          result.wrongTypes.push(`output "${o.reported}" is listed in ${field} but is a regular file`);
          continue;
        }
        const digest = await this.file(host, st);
        result.outputFiles.push({ path: o.reported, digest: digest.toProto(), isExecutable: (st.mode & 0o111) !== 0, nodeProperties: this.props(st, 'file') });
      }
    }
    return result;
  }

  private view(): RootView {
    return { hostPath: (rel: string) => this.hostPath(rel), mountPoint: this.opts.mountPoint ?? '/' };
  }

  /**
   * What a symlink output points at, resolved inside the sandbox: a file, a directory, or
   * unknown (dangling, or outside the input root, which this server does not look at).
   */
  private async symlinkTargetType(rel: string): Promise<'file' | 'directory' | 'unknown'> {
    const target = await resolveInRoot(this.view(), rel, { followLast: true });
    if (target === undefined) return 'unknown';
    try {
      const st = await lstat(this.hostPath(target));
      return st.isDirectory() ? 'directory' : st.isFile() ? 'file' : 'unknown';
    } catch {
      return 'unknown';
    }
  }

  /** The node properties the Command asked for (output_node_properties), for one entry. */
  private props(st: Stats, kind: 'file' | 'directory' | 'symlink'): re.INodeProperties | undefined {
    const p: re.INodeProperties = {};
    let any = false;
    if (this.opts.nodeProperties.includes('mtime')) {
      const ms = st.mtimeMs;
      p.mtime = protoTimeFromMs(ms);
      any = true;
    }
    // A symlink's mode is always 0777 on Linux: it says nothing.
    if (this.opts.nodeProperties.includes('unix_mode') && kind !== 'symlink') {
      p.unixMode = { value: st.mode & 0o7777 };
      any = true;
    }
    return any ? p : undefined;
  }

  /** Build the Directory for a host directory, storing every descendant Directory as a blob. */
  private async directory(rel: string, host: string): Promise<{ root: re.IDirectory; children: Array<{ digest: Digest; directory: re.IDirectory }> }> {
    const children: Array<{ digest: Digest; directory: re.IDirectory }> = [];
    // With node properties asked for, every Directory carries its own (mtime, mode): the
    // input's messages for a cached read-only subtree would not say them.
    const withProps = this.opts.nodeProperties.length > 0;
    const build = async (rel: string, host: string): Promise<re.IDirectory> => {
      const cached = this.staged.cachedDirs.get(rel);
      if (cached && !withProps) return this.knownDirectory(cached.digest, children);
      const dir: re.IDirectory = { files: [], directories: [], symlinks: [] };
      const entries = (await readdir(host, { withFileTypes: true })).sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
      const fileJobs: Array<() => Promise<void>> = [];
      for (const e of entries) {
        const childRel = rel ? `${rel}/${e.name}` : e.name;
        if (this.opts.ignore.has(childRel)) continue;
        const childHost = this.hostPath(childRel);
        if (e.isSymbolicLink()) {
          const st = await lstat(childHost);
          dir.symlinks!.push({ name: e.name, target: await readlink(childHost), nodeProperties: this.props(st, 'symlink') });
        } else if (e.isDirectory()) {
          const sub = await build(childRel, childHost);
          const digest = await this.store(re.Directory.encode(sub).finish());
          children.push({ digest, directory: sub });
          dir.directories!.push({ name: e.name, digest: digest.toProto() });
        } else if (e.isFile()) {
          fileJobs.push(async () => {
            const st = await stat(childHost);
            const digest = await this.file(childHost, st);
            dir.files!.push({ name: e.name, digest: digest.toProto(), isExecutable: (st.mode & 0o111) !== 0, nodeProperties: this.props(st, 'file') });
          });
        }
        // Sockets, FIFOs and device nodes are not content: skipped.
      }
      for (let i = 0; i < fileJobs.length; i += PARALLEL_FILES) await Promise.all(fileJobs.slice(i, i + PARALLEL_FILES).map((j) => j()));
      dir.files!.sort(byName);
      if (withProps) dir.nodeProperties = this.props(await stat(host), 'directory');
      return canonicalDirectory(dir);
    };
    const root = await build(rel, host);
    return { root, children };
  }

  /** A read-only input directory, unchanged by construction: reuse the input's messages. */
  private knownDirectory(digest: Digest, children: Array<{ digest: Digest; directory: re.IDirectory }>): re.IDirectory {
    const dir = this.input.directories.get(digest.key)!;
    const add = (d: re.IDirectory, fn: DigestFunction): void => {
      for (const sub of d.directories ?? []) {
        const sd = Digest.fromProto(sub.digest, fn);
        const sdir = this.input.directories.get(sd.key)!;
        children.push({ digest: sd, directory: sdir });
        add(sdir, fn);
      }
    };
    add(dir, digest.fn);
    return dir;
  }

  private async store(bytes: Uint8Array): Promise<Digest> {
    const digest = Digest.compute(bytes, this.opts.fn);
    await this.cas.put(digest, bytes);
    return digest;
  }

  private async file(host: string, st: Stats): Promise<Digest> {
    const known = this.staged.knownInodes.get(`${st.dev}:${st.ino}`);
    if (known) return known;
    if (st.size <= WHOLE_FILE_BYTES) {
      const data = await readFile(host);
      const digest = Digest.compute(data, this.opts.fn);
      if ((await this.cas.findMissing([digest])).length > 0) await this.cas.put(digest, data);
      return digest;
    }
    const hash = this.opts.fn.newHash();
    let size = 0;
    for await (const chunk of createReadStream(host, { highWaterMark: 1024 * 1024 })) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    const digest = Digest.of(this.opts.fn, hash.digest('hex'), size);
    if ((await this.cas.findMissing([digest])).length > 0) {
      const writer = await this.cas.beginWrite(digest);
      try {
        for await (const chunk of createReadStream(host, { highWaterMark: 1024 * 1024 })) await writer.write(chunk as Buffer);
        await writer.commit();
      } finally {
        await writer.abort();
      }
    }
    return digest;
  }
}

/**
 * A Directory without default-valued fields, so that it encodes in the canonical form REAPI
 * requires: protobufjs writes every field that is set, even to false or 0, while clients
 * (buildbox-casd, BuildStream) re-encode Directories canonically and look them up by the
 * digest of that encoding. An explicit `is_executable: false` or `size_bytes: 0` made the
 * output's digest one that no client could find.
 */
export function canonicalDirectory(dir: re.IDirectory): re.IDirectory {
  const digest = (d: re.IDigest | null | undefined): re.IDigest => ({
    ...(d?.hash ? { hash: d.hash } : {}),
    ...(Number(d?.sizeBytes ?? 0) !== 0 ? { sizeBytes: d!.sizeBytes } : {}),
  });
  const props = (p: re.INodeProperties | null | undefined): { nodeProperties?: re.INodeProperties } => {
    if (!p) return {};
    const out: re.INodeProperties = {};
    if (p.properties?.length) out.properties = p.properties;
    if (p.mtime) {
      out.mtime = {
        ...(Number(p.mtime.seconds ?? 0) !== 0 ? { seconds: p.mtime.seconds } : {}),
        ...(Number(p.mtime.nanos ?? 0) !== 0 ? { nanos: p.mtime.nanos } : {}),
      };
    }
    if (p.unixMode) out.unixMode = Number(p.unixMode.value ?? 0) !== 0 ? { value: p.unixMode.value } : {};
    return { nodeProperties: out };
  };
  const out: re.IDirectory = {};
  if (dir.files?.length) {
    out.files = dir.files.map((f) => ({ ...(f.name ? { name: f.name } : {}), digest: digest(f.digest), ...(f.isExecutable ? { isExecutable: true } : {}), ...props(f.nodeProperties) }));
  }
  if (dir.directories?.length) out.directories = dir.directories.map((d) => ({ ...(d.name ? { name: d.name } : {}), digest: digest(d.digest) }));
  if (dir.symlinks?.length) {
    out.symlinks = dir.symlinks.map((l) => ({ ...(l.name ? { name: l.name } : {}), ...(l.target ? { target: l.target } : {}), ...props(l.nodeProperties) }));
  }
  if (dir.nodeProperties) Object.assign(out, props(dir.nodeProperties));
  return out;
}

/**
 * Normalise an output path against the working directory, inside the input root. Returns the
 * sandbox-relative path ("" for the root) or undefined when it escapes the root.
 */
export function resolveOutputPath(workingDirectory: string, path: string): string | undefined {
  if (path.startsWith('/')) return undefined;
  const joined = posix.normalize(posix.join(workingDirectory || '.', path));
  if (joined === '..' || joined.startsWith('../')) return undefined;
  return joined === '.' ? '' : joined.replace(/\/$/, '');
}
