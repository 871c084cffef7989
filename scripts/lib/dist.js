// What the scripts share: the compiled project in dist/ (they run it, not the sources), and
// scratch directories a daemon run as root can use.
import { chmodSync, existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const DIST = new URL('../../dist/', import.meta.url);

/**
 * The named modules of dist/, merged into one object. Without a build, says so as `script`
 * and exits 2 (the scripts' "could not run").
 */
export async function fromDist(script, ...paths) {
  if (!existsSync(new URL('daemon/daemon.js', DIST))) {
    process.stderr.write(`${script}: dist/ is not built: run \`npm run build\` first\n`);
    process.exit(2);
  }
  const mods = await Promise.all(paths.map((p) => import(new URL(p, DIST).href)));
  return Object.assign({}, ...mods);
}

/**
 * A new private temporary directory that others may pass through (mode 0711): a daemon run as
 * root runs actions as an unprivileged user, which must reach the data dir below it.
 */
export function scratchDir(prefix, parent = tmpdir()) {
  const dir = mkdtempSync(join(parent, prefix));
  chmodSync(dir, 0o711);
  return dir;
}
