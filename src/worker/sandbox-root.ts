import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ICommand } from '../proto.js';
import { HOST_TOOLS_ROOT } from '../runner/bubblewrap-runner.js';
import type { PlatformRequirements } from '../scheduler/platform.js';
import type { InputStager, StagedInput } from './input-stager.js';
import type { InputTree } from './input-tree.js';
import { resolveOutputPath } from './output-collector.js';
import { resolveInRoot, type RootView } from './root-path.js';

/** The requested outputs, normalised inside the root and echoed verbatim. */
export function requestedOutputs(command: ICommand): Array<{ rel: string; reported: string; kind: 'any' | 'file' | 'directory' }> {
  const wd = command.workingDirectory ?? '';
  const out: Array<{ rel: string; reported: string; kind: 'any' | 'file' | 'directory' }> = [];
  const add = (p: string, kind: 'any' | 'file' | 'directory'): void => {
    const rel = resolveOutputPath(wd, p);
    if (rel !== undefined) out.push({ rel, reported: p, kind });
  };
  if ((command.outputPaths ?? []).length > 0) for (const p of command.outputPaths!) add(p, 'any');
  else {
    for (const p of command.outputFiles ?? []) add(p, 'file');
    for (const p of command.outputDirectories ?? []) add(p, 'directory');
  }
  return out;
}

/** An input root on disk, ready for the runner. */
export interface SandboxRoot {
  staged: StagedInput;
  /** Where the input root is inside the sandbox: "/" (rootfs) or HOST_TOOLS_ROOT. */
  mountPoint: string;
  /** The root as the sandbox sees it, for resolving paths inside it. */
  view: RootView;
  /** Mount points made here that the input root lacked (left out of outputs). */
  ignore: Set<string>;
  outputs: ReturnType<typeof requestedOutputs>;
}

/**
 * Stage an input root into `rootDir` exactly as an action sees it: the stager's files and
 * mounts, the mount points the runner needs in a rootfs sandbox, and the directories leading
 * up to the output paths (REAPI: they exist before the command runs). Shared by the workers
 * and `reexec shell`, so that a shell sees what the action saw.
 */
export async function prepareSandboxRoot(stager: InputStager, tree: InputTree, rootDir: string, command: ICommand, platform: PlatformRequirements): Promise<SandboxRoot> {
  const staged = await stager.stage(tree, rootDir, { honourReadOnly: platform.sandbox === 'rootfs' });
  // Mount points the runner needs that the input root lacks: created here, left out of outputs.
  const ignore = new Set<string>();
  if (platform.sandbox === 'rootfs') {
    // Three calls on the daemon's thread: cheaper than three thread-pool round trips (see FsOps).
    for (const m of ['proc', 'dev', 'tmp']) {
      if (existsSync(join(rootDir, m))) continue;
      mkdirSync(join(rootDir, m));
      ignore.add(m);
    }
  }
  const outputs = requestedOutputs(command);
  // Directories leading up to output paths are made one at a time, resolving input symlinks
  // inside the root: `x -> /somewhere` with an output `x/y/z` must not create /somewhere/y on
  // the host. Never inside the shared read-only cache.
  const mountPoint = platform.sandbox === 'host-tools' ? HOST_TOOLS_ROOT : '/';
  const cached = [...staged.cachedDirs.keys()];
  const view: RootView = { hostPath: (rel: string) => join(rootDir, rel), mountPoint, readOnly: (rel: string) => cached.some((c) => rel === c || rel.startsWith(c + '/')) };
  for (const o of outputs) {
    const parent = o.rel.includes('/') ? o.rel.slice(0, o.rel.lastIndexOf('/')) : '';
    if (parent) await resolveInRoot(view, parent, { followLast: true, create: true, created: (p) => stager.own(p) });
  }
  return { staged, mountPoint, view, ignore, outputs };
}
