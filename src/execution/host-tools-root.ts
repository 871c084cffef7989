import { access, constants, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../config/config.js';
import { resolveInRoot } from '../worker/root-path.js';

/**
 * Check execution.host-tools.root when the daemon starts, so that a wrong path is a clear
 * error then, not a failure of every host-tools action later: a directory, with a /bin/sh
 * (found the way the sandbox will find it, symlinks resolved inside the root).
 */
export async function checkHostToolsRoot(root: string): Promise<void> {
  const what = `execution.host-tools.root "${root}"`;
  let st;
  try {
    st = await stat(root);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`${what} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? (err as Error).message})`}: set it to a root file system holding the toolchain host-tools actions use, or / for the host's own`);
  }
  if (!st.isDirectory()) throw new ConfigError(`${what} is not a directory: set it to a root file system holding the toolchain host-tools actions use, or / for the host's own`);
  const view = { hostPath: (rel: string) => join(root, rel), mountPoint: '/' };
  const sh = await resolveInRoot(view, 'bin/sh', { followLast: true });
  const problem = async (): Promise<string | undefined> => {
    if (sh === undefined) return 'it has no /bin/sh (or its /bin/sh leads outside it)';
    try {
      const s = await stat(join(root, sh));
      if (!s.isFile()) return `its /bin/sh (/${sh}) is not a file`;
      await access(join(root, sh), constants.X_OK);
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'it has no /bin/sh' : `its /bin/sh (/${sh}) cannot be run: ${(err as Error).message}`;
    }
    // The sandbox mounts procfs, /dev and a /tmp (holding the input root) on the read-only root:
    // their mount points must be there.
    const absent: string[] = [];
    for (const dir of ['proc', 'dev', 'tmp']) {
      const rel = await resolveInRoot(view, dir, { followLast: true });
      const isDir = rel !== undefined && (await stat(join(root, rel)).then((x) => x.isDirectory(), () => false));
      if (!isDir) absent.push(`/${dir}`);
    }
    return absent.length ? `it lacks the director${absent.length > 1 ? 'ies' : 'y'} ${absent.join(', ')} (mount points of the sandbox)` : undefined;
  };
  const why = await problem();
  if (why) throw new ConfigError(`${what} does not look like a root file system: ${why}. Point it at a whole root (e.g. one made with debootstrap), or / for the host's own`);
}
