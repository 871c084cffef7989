import { spawnSync } from 'node:child_process';

/**
 * Give users read and write access to a file through POSIX ACL entries (`setfacl`, from the
 * acl package): how other local users are admitted to a unix socket, whose peers Node cannot
 * identify (it has no SO_PEERCRED), so that the kernel keeps deciding who may connect.
 * Throws with the fix when setfacl is missing or the file system refuses ACLs.
 */
export function grantUsers(path: string, uids: readonly number[]): void {
  if (uids.length === 0) return;
  const spec = uids.map((u) => `u:${u}:rw`).join(',');
  const r = spawnSync('setfacl', ['-m', spec, path], { encoding: 'utf8', timeout: 10_000 });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new Error(`admitting auth.local-users to the unix socket ${path} needs setfacl: install it (apt-get install acl), or serve those users over TCP only`);
  }
  if (r.status !== 0) {
    throw new Error(`setfacl -m ${spec} ${path} failed: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()} (the file system must support POSIX ACLs; or serve those users over TCP only)`);
  }
}
