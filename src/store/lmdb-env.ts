import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { open, type RootDatabase, type Database } from 'lmdb';
import { diskError, lmdbCause, type DiskSpace } from './disk-space.js';

/**
 * The one LMDB environment of a data dir. Every store (CAS index and small blobs, action
 * cache, assets, operations) is a named database in it, so one write transaction can span
 * them and one process owns them.
 */
export class LmdbEnv {
  private constructor(
    readonly root: RootDatabase,
    readonly path: string,
    readonly dataDir: string,
    /** The data dir's file system: writes keep out of its headroom, deletions may use its reserve. */
    readonly space: DiskSpace | undefined,
  ) {}

  static open(dataDir: string, options: { noSync?: boolean; space?: DiskSpace } = {}): LmdbEnv {
    const path = join(dataDir, 'lmdb');
    mkdirSync(path, { recursive: true });
    const root = open({
      path,
      maxDbs: 32,
      // Values are protobuf bytes or small msgpack records; no LMDB-level compression:
      // it makes CAS writes 2-5x slower (measured).
      compression: false,
      noSync: options.noSync ?? false,
    });
    return new LmdbEnv(root, path, dataDir, options.space);
  }

  /**
   * Every write to the store goes through here. `what` names it for messages ("storing blob
   * sha256:ab…/12"). A write that is not a deletion is refused with RESOURCE_EXHAUSTED when
   * the file system is nearly full; a deletion first makes room (DiskSpace.roomToDelete). A
   * failed commit (ENOSPC, EDQUOT, EIO) becomes RESOURCE_EXHAUSTED naming the data dir,
   * with lmdb-js's second error promise handled.
   */
  async write<T>(what: string, fn: () => Promise<T>, options: { deletion?: boolean } = {}): Promise<T> {
    if (options.deletion) await this.space?.roomToDelete();
    else this.space?.checkRoom(what);
    try {
      return await fn();
    } catch (err) {
      throw diskError(await lmdbCause(err), this.dataDir, what);
    }
  }

  /** A named database holding raw bytes (protobuf messages, blob contents). */
  binary(name: string): Database<Buffer, string> {
    return this.root.openDB<Buffer, string>({ name, encoding: 'binary' });
  }

  /** A named database holding structured records (msgpack). */
  records<V>(name: string): Database<V, string> {
    return this.root.openDB<V, string>({ name, encoding: 'msgpack' });
  }

  async close(): Promise<void> {
    await this.root.flushed;
    await this.root.close();
  }
}

export function dataSubdir(dataDir: string, ...parts: string[]): string {
  const p = join(dataDir, ...parts);
  mkdirSync(p, { recursive: true });
  return p;
}
