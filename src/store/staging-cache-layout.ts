import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Digest } from '../digest/digest.js';
import { digestFunctionFromName } from '../digest/digest-function.js';

/**
 * The names of remote execution's staging cache (DATA/cache), written by the input stager and
 * read back by the staging-cache sweeper: one module, so the two cannot drift apart.
 *
 *   files/<xx>/<fn>-<hash>-<size><x|r>   a read-only file per blob and mode (x: executable)
 *   dirs/<fn>/<hash>-<size>              a read-only materialisation of a whole Directory
 *   <entry>.tmp-<hex>                    an entry being made (renamed into place when complete)
 */
export class StagingCacheLayout {
  readonly filesDir: string;
  readonly dirsDir: string;

  constructor(readonly cacheDir: string) {
    this.filesDir = join(cacheDir, 'files');
    this.dirsDir = join(cacheDir, 'dirs');
  }

  /** The entry of a blob as a file, executable or not. */
  filePath(digest: Digest, executable: boolean): string {
    return join(this.filesDir, digest.hash.slice(0, 2), `${digest.fn.name}-${digest.hash}-${digest.sizeBytes}${executable ? 'x' : 'r'}`);
  }

  /** The entry of a whole Directory. */
  dirPath(digest: Digest): string {
    return join(this.dirsDir, digest.fn.name, `${digest.hash}-${digest.sizeBytes}`);
  }

  /** A fresh name to make `entryPath` under before renaming it into place. */
  static tmpPath(entryPath: string): string {
    return `${entryPath}.tmp-${randomBytes(6).toString('hex')}`;
  }

  static isTmp(name: string): boolean {
    return TMP.test(name);
  }

  /**
   * What a name under files/<xx>/ stands for: undefined when it is no entry name at all;
   * `{ digest: undefined }` when it is shaped like one but names no valid digest.
   */
  static parseFileEntry(name: string): { digest: Digest | undefined } | undefined {
    const m = FILE_ENTRY.exec(name);
    return m ? { digest: digestOf(m[1]!, m[2]!, m[3]!) } : undefined;
  }

  /** What a name under dirs/<fn>/ stands for (as parseFileEntry). */
  static parseDirEntry(fnName: string, name: string): { digest: Digest | undefined } | undefined {
    const m = DIR_ENTRY.exec(name);
    return m ? { digest: digestOf(fnName, m[1]!, m[2]!) } : undefined;
  }
}

const FILE_ENTRY = /^([a-z0-9]+)-([0-9a-f]+)-([0-9]+)[xr]$/;
const DIR_ENTRY = /^([0-9a-f]+)-([0-9]+)$/;
const TMP = /\.tmp-[0-9a-f]+$/;

function digestOf(fnName: string, hash: string, size: string): Digest | undefined {
  const fn = digestFunctionFromName(fnName);
  try {
    return fn ? Digest.of(fn, hash, Number(size)) : undefined;
  } catch {
    return undefined;
  }
}
