import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlobStore } from '../cas/blob-store.js';
import { Digest } from '../digest/digest.js';
import { digestFunctionFromName } from '../digest/digest-function.js';
import { detectIsaSupport } from '../execution/isa-support.js';
import type { reexec } from '../gen/proto.js';
import type { ICommand } from '../proto.js';
import { findBubblewrap, runAttached, SandboxSetupError } from '../runner/bubblewrap-runner.js';
import { sandboxPolicy, sandboxRootOf } from '../execution/build-executor.js';
import { HostToolsView } from '../runner/host-tools-view.js';
import { hostIsa, parsePlatform, type PlatformRequirements } from '../scheduler/platform.js';
import { formatBytes } from '../util/format-bytes.js';
import { StatusError } from '../util/status-error.js';
import { InputStager } from '../worker/input-stager.js';
import { fetchInputTree } from '../worker/input-tree.js';
import { prepareSandboxRoot } from '../worker/sandbox-root.js';

/** What keeps `reexec shell` from rebuilding a sandbox here, and how to fix it. */
export class ShellError extends Error {
  constructor(
    message: string,
    readonly fix?: string,
  ) {
    super(message);
    this.name = 'ShellError';
  }
}

export interface ShellOptions {
  plan: reexec.admin.v1.IShellPlan;
  /** The daemon's CAS (read-only: RemoteBlobStore). */
  cas: BlobStore;
  /** Run this instead of an interactive shell. */
  command?: string[];
  /** A person's terminal is attached: an interactive shell with job control. */
  tty: boolean;
  /** Where the private copy of the input root goes (a temporary directory in it). */
  tmpRoot?: string;
  /** Progress for a person (stderr). */
  progress?: (message: string) => void;
  /** The user's environment, for TERM in an interactive shell. */
  userEnv?: NodeJS.ProcessEnv;
  /** Told the bubblewrap command line before it runs (tests, --verbose). */
  onArgs?: (file: string, args: string[]) => void;
}

/** Every ISA the action needs must run here: natively, as x86-32 under linux32, or under QEMU with binfmt F. */
async function checkIsas(platform: PlatformRequirements): Promise<void> {
  const native = hostIsa();
  const foreign = platform.isas.filter((i) => i !== native);
  if (foreign.length === 0) return;
  const support = await detectIsaSupport({ bubblewrapOk: true });
  for (const isa of foreign) {
    const s = support.find((x) => x.isa === isa);
    if (!s) throw new ShellError(`the action needs ISA=${isa}, which this ${native} host cannot run (no QEMU user-mode target for it)`, 'Open the shell on a machine of that ISA.');
    if (!s.ok) throw new ShellError(`the action needs ISA=${isa}, which this host cannot run now: ${s.detail}`, s.fix ? `Fix: ${s.fix} (or \`sudo reexec init --setup-binfmt\`).` : 'Run `reexec init` to see what the host can emulate.');
  }
}

/** Remove a tree even where what ran in it took the write bit away. */
async function removeTree(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true, force: true });
    return;
  } catch {
    /* made writable below */
  }
  const open = async (d: string): Promise<void> => {
    await chmod(d, 0o700).catch(() => undefined);
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) if (e.isDirectory()) await open(join(d, e.name));
  };
  await open(dir);
  await rm(dir, { recursive: true, force: true });
}

/**
 * `reexec shell`: stage an action's input root from the daemon's CAS into a private
 * temporary directory with the workers' own code (stager, mount points, output directories),
 * then run bubblewrap with the arguments the runner builds for the action's platform (rootfs
 * or host-tools sandbox, uid/gid, network, foreign ISA under QEMU, x86-32 under linux32), as
 * a child of the user's terminal: an interactive shell, or one command. Nothing reaches the
 * store (the CAS is read through a read-only client); the directory is removed afterwards.
 * Resolves to the exit status of what ran.
 */
export async function runShell(o: ShellOptions): Promise<number> {
  const p = o.plan;
  const progress = o.progress ?? (() => undefined);
  let platform: PlatformRequirements;
  try {
    platform = parsePlatform({ properties: p.platform ?? [] }, hostIsa());
  } catch (err) {
    throw new ShellError(`the action's platform cannot be served here: ${(err as Error).message}`);
  }
  const bwrap = findBubblewrap();
  if (!bwrap) throw new ShellError('bubblewrap (bwrap) is not installed here: reexec shell runs the action in the same sandbox as the workers', 'Install it: sudo apt-get install -y bubblewrap');
  await checkIsas(platform);
  const fn = digestFunctionFromName(p.digestFunction ?? 'sha256');
  if (!fn) throw new ShellError(`the daemon named an unknown digest function "${p.digestFunction}"`);
  const [hash, size] = (p.inputRootDigest ?? '').split('/');
  const root = Digest.of(fn, hash ?? '', Number(size), 'input_root_digest');
  let tree;
  try {
    tree = await fetchInputTree(o.cas, root);
  } catch (err) {
    if (err instanceof StatusError && err.preconditionFailures.length > 0) {
      throw new ShellError(
        `the input root of action ${p.actionDigest} is no longer complete in the CAS: ${err.message}`,
        'The blobs of the newest failed actions are kept from eviction (history.keep-failed in the daemon\'s config); run the build again to upload them.',
      );
    }
    throw err;
  }
  const dir = await mkdtemp(join(o.tmpRoot ?? tmpdir(), 'reexec-shell-'));
  try {
    const count = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`;
    progress(
      `staging the input root of ${p.actionDigest} (${count(tree.fileCount, 'file', 'files')}, ${count(tree.directories.size, 'directory', 'directories')}, ` +
        `${formatBytes([...tree.files.values()].reduce((n, d) => n + d.sizeBytes, 0))} distinct) into ${dir}`,
    );
    const stager = new InputStager(o.cas, { localFile: () => undefined }, join(dir, 'cache'));
    const command: ICommand = {
      arguments: p.arguments ?? [],
      environmentVariables: (p.environment ?? []).map((e) => ({ name: e.name ?? '', value: e.value ?? '' })),
      workingDirectory: p.workingDirectory ?? '',
      outputPaths: p.outputPaths ?? [],
    };
    const sandboxRoot = await prepareSandboxRoot(stager, tree, join(dir, 'root'), command, platform);
    const interactive = !o.command?.length;
    const argv = interactive ? ['sh', '-i'] : o.command!;
    const env: Array<[string, string]> = (command.environmentVariables ?? []).map((e) => [e.name ?? '', e.value ?? '']);
    if (interactive) {
      // A terminal type and a prompt that says where one is: conveniences of the interactive shell only.
      const has = (k: string): boolean => env.some(([n]) => n === k);
      if (!has('TERM') && o.userEnv?.TERM) env.push(['TERM', o.userEnv.TERM]);
      if (!has('PS1')) env.push(['PS1', `[reexec shell ${(p.actionDigest ?? '').slice(0, 12)}] \\w \\$ `]);
    }
    const where = platform.sandbox === 'host-tools' ? 'the host-tools sandbox (the host read-only, the input root at /tmp/reexec-build)' : 'the rootfs sandbox (the input root as /)';
    progress(interactive ? `opening sh in ${where}; leave it with exit (the copy of the input root is removed then)` : `running ${argv.join(' ')} in ${where}`);
    if (platform.remoteApisSocket) progress(`the action asked for a REAPI socket at /${platform.remoteApisSocket} (remoteApisSocketPath): the shell has none`);
    try {
      return await runAttached(
        {
          root: sandboxRootOf(sandboxRoot.staged),
          argv,
          env,
          workingDirectory: p.workingDirectory ?? '',
          policy: sandboxPolicy(platform),
          // What host-tools actions see of this host: the daemon's secrets and hidden paths, and
          // the built-in private paths (the user's own home among them).
          hostMounts: platform.sandbox === 'host-tools' ? await new HostToolsView({ root: p.hostToolsRoot || '/', hide: p.hide ?? [], expose: [], secrets: () => p.hideFiles ?? [], home: homedir() }).mounts() : undefined,
          ...(p.hostToolsRoot ? { hostToolsRoot: p.hostToolsRoot } : {}),
          interactive: o.tty,
        },
        o.onArgs,
      );
    } catch (err) {
      if (err instanceof SandboxSetupError) throw new ShellError(err.message);
      throw err;
    }
  } finally {
    await removeTree(dir);
  }
}
