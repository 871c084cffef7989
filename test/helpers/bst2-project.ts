import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeBusyboxSysroot, runInRoot } from './clients-root.js';
import type { ClientRun } from './run-client.js';

/**
 * How BuildStream 2 runs in the clients root for a work folder from makeClientsWork (`inside`
 * as the root sees it): from its project/, with HOME and TMPDIR in the work folder.
 */
export function bst2RunOptions(inside: string, timeoutMs: number): { cwd: string; env: Record<string, string>; timeoutMs: number } {
  return { cwd: `${inside}/project`, env: { HOME: `${inside}/home`, TMPDIR: `${inside}/tmp` }, timeoutMs };
}

/** `bst --no-interactive -c CONF ARGS` in the clients root, CONF a user configuration in the work folder. */
export function runBst2(root: string, inside: string, conf: string, args: readonly string[], timeoutMs: number): Promise<ClientRun> {
  return runInRoot(root, ['bst', '--no-interactive', '-c', `${inside}/${conf}`, ...args], bst2RunOptions(inside, timeoutMs));
}

/**
 * A BuildStream 2 project called `name` in `project` (a host path in the clients root):
 * elements/base.bst imports files/sysroot, a busybox sysroot made from the clients root's
 * busybox, or from `busybox` (e.g. a foreign one). The test adds its own elements.
 */
export function makeBst2Project(root: string, project: string, name: string, busybox?: string): void {
  makeBusyboxSysroot(root, join(project, 'files', 'sysroot'), busybox);
  mkdirSync(join(project, 'elements'));
  writeFileSync(join(project, 'project.conf'), `name: ${name}\nmin-version: 2.0\nelement-path: elements\n`);
  writeFileSync(join(project, 'elements', 'base.bst'), 'kind: import\nsources:\n- kind: local\n  path: files/sysroot\n');
}

/**
 * A BuildStream 2 user configuration with its cache and logs in the work folder (`inside`),
 * and these remotes, each a YAML flow mapping such as `{url: "http://…", push: true}`:
 * artifact and source caches, and remote execution (`service` for its execution and storage
 * services).
 */
export function bst2UserConfig(
  inside: string,
  remotes: { artifacts: string; sourceCaches?: string; remoteExecution?: { service: string; actionCache: string } },
): string {
  const re = remotes.remoteExecution;
  return [
    `cachedir: ${inside}/cache`,
    `logdir: ${inside}/logs`,
    `artifacts: {override-project-caches: true, servers: [${remotes.artifacts}]}`,
    ...(remotes.sourceCaches ? [`source-caches: {override-project-caches: true, servers: [${remotes.sourceCaches}]}`] : []),
    ...(re ? ['remote-execution:', `  execution-service: ${re.service}`, `  storage-service: ${re.service}`, `  action-cache-service: ${re.actionCache}`] : []),
    '',
  ].join('\n');
}
