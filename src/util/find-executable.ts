import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The directories of a PATH value (a sane default when unset). */
export function pathDirs(path: string | undefined = process.env['PATH']): string[] {
  return (path ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter).filter(Boolean);
}

/**
 * Absolute path of the first executable file called `name` on PATH, as a shell's `command -v`
 * finds it (builtins aside), or undefined: the one "find a binary" of the code base.
 */
export function findExecutable(name: string, path: string | undefined = process.env['PATH']): string | undefined {
  for (const dir of pathDirs(path)) {
    const candidate = join(dir, name);
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      /* not here */
    }
  }
  return undefined;
}
