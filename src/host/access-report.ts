import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname } from 'node:path';
import { LocalUsers } from '../auth/local-users.js';
import { HOST_TOOLS_HIDDEN, HOST_TOOLS_KEPT, HOST_TOOLS_SCRATCH } from '../runner/host-tools-view.js';
import { lookupRunAsOrError, RUN_AS_USER } from './run-as.js';
import { lookupUser } from './users.js';

/** What `reexec init` says about who may use the daemon and what its actions see. */
export interface AccessReport {
  /** Who is served without tokens. */
  clients: string;
  /** The config line that admits other local users (what to write, or what was written). */
  widen: string;
  /** Who actions run as; ok false when a root daemon could not start. */
  actions: { ok: boolean; detail: string; fix?: string };
  /** What host-tools actions do not see, and what they see empty and writable. */
  hostTools: { hidden: string[]; keptFromHidden: string[]; scratch: string[] };
}

/** The nearest existing directory at or above `p` (the data dir may not exist yet). */
function existingAncestor(p: string): string {
  let d = p;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  return d;
}

/**
 * The report for a config: `localUsers` as auth.local-users says (names must exist), the data
 * dir, and whether a token file is set. For root, also whether the run-as user can reach the
 * data dir (bubblewrap bind-mounts its staging area as that user).
 */
export function accessReport(opts: { localUsers: 'any' | readonly string[]; dataDir: string; configPath: string; tokens: boolean; /** execution.run-as as written (default auto). */ runAs?: string }): AccessReport {
  const local = LocalUsers.resolve(opts.localUsers, opts.configPath);
  const names = opts.localUsers === 'any' ? [] : opts.localUsers;
  const clients = opts.tokens
    ? 'with a token file, the token decides what a client may do; a unix socket admits only the local users below'
    : `without access tokens: ${local.describe()}; other local users are refused, other machines need a token or a client certificate`;
  const widen = names.length > 0 || opts.localUsers === 'any'
    ? `auth: {local-users: ${opts.localUsers === 'any' ? 'any' : `[${names.join(', ')}]`}} (written)`
    : `to admit other local users, set in ${opts.configPath}:  auth: {local-users: [alice, bob]}  (or any), or run: reexec init --force --local-users alice,bob`;

  let actions: AccessReport['actions'];
  const runAs = lookupRunAsOrError(opts.runAs);
  if ('fix' in runAs) actions = { ok: false, detail: runAs.message.replace(/; fix: .*$/, ''), fix: runAs.fix };
  else if (!runAs.user) actions = { ok: true, detail: `run as ${runAs.description}` };
  else {
    // The daemon opens the data dir itself to that user's group: only what is above it matters.
    const above = existingAncestor(dirname(opts.dataDir));
    const blocked = spawnSync('test', ['-x', above], { uid: runAs.user.uid, gid: runAs.user.gid, cwd: '/' }).status !== 0;
    const fallback = runAs.fallback ? ` (no ${RUN_AS_USER} user yet: see run-as below)` : '';
    actions = blocked
      ? { ok: false, detail: `would run as ${runAs.description}, which cannot reach the data dir ${opts.dataDir} (${above} is closed to it)`, fix: 'use a data dir it can reach, e.g. reexec init --force --data-dir /var/lib/reexec' }
      : { ok: true, detail: `run as ${runAs.description}, never root${fallback}` };
  }
  const home = homedir();
  const hidden = [...HOST_TOOLS_HIDDEN, ...(HOST_TOOLS_HIDDEN.some((h) => home === h || home.startsWith(h + '/')) ? [] : [`${home} ($HOME)`]), `${opts.dataDir} (the data dir)`, "reexec's unix sockets, token file and TLS keys, other actions' REAPI sockets"];
  return { clients, widen, actions, hostTools: { hidden, keptFromHidden: [...HOST_TOOLS_KEPT], scratch: [...HOST_TOOLS_SCRATCH] } };
}

/** Users named by `reexec init --local-users`: each must exist ("any" stands alone). */
export function parseLocalUsersFlag(values: readonly string[]): 'any' | string[] {
  const list = values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
  if (list.includes('any')) return 'any';
  for (const u of list) if (!lookupUser(u)) throw new Error(`--local-users: there is no user "${u}" on this host`);
  return list;
}
