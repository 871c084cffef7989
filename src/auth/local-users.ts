import { ConfigError } from '../config/config.js';
import { lookupUser, processUid } from '../host/users.js';
import { Code, StatusError } from '../util/status-error.js';

/**
 * Which local users a daemon without access tokens serves: its own user and root always, and
 * those `auth.local-users` names (or every one, with `any`). Another user reaching the daemon
 * would otherwise borrow its privileges: read what it can read through host-tools actions, and
 * fill or poison its cache.
 */
export class LocalUsers {
  private readonly names = new Map<number, string>();

  private constructor(
    /** The uid the daemon runs as. */
    readonly ownerUid: number,
    /** 'any', or the uids admitted besides the owner and root. */
    readonly admitted: 'any' | ReadonlySet<number>,
    /** Where the setting lives, for messages ("/etc/reexec/config.yaml", "the config file"). */
    private readonly configHint: string,
  ) {}

  /** Resolve `auth.local-users` (names or uids, or "any"); an unknown user is a ConfigError. */
  static resolve(setting: 'any' | readonly string[], configHint: string, ownerUid = processUid()): LocalUsers {
    if (setting === 'any') return new LocalUsers(ownerUid, 'any', configHint);
    const uids = new Set<number>();
    const out = new LocalUsers(ownerUid, uids, configHint);
    for (const who of setting) {
      const u = lookupUser(who);
      if (!u) throw new ConfigError(`auth.local-users: there is no user "${who}" on this host (getent passwd ${who} finds nothing)`);
      uids.add(u.uid);
      out.names.set(u.uid, u.name);
    }
    return out;
  }

  /** The daemon's own user, root, and the admitted ones. */
  admits(uid: number): boolean {
    return uid === 0 || uid === this.ownerUid || this.admitted === 'any' || this.admitted.has(uid);
  }

  /** Everyone may connect. */
  get any(): boolean {
    return this.admitted === 'any';
  }

  /** Uids admitted besides the owner and root ([] for 'any': everyone is). */
  get extraUids(): number[] {
    return this.admitted === 'any' ? [] : [...this.admitted];
  }

  private nameOf(uid: number): string {
    let n = this.names.get(uid);
    if (n === undefined) {
      n = lookupUser(uid)?.name ?? '';
      this.names.set(uid, n);
    }
    return n ? `${n} (uid ${uid})` : `uid ${uid}`;
  }

  /** Who is served, in words: "only its owner (alice, uid 1000) and root". */
  describe(): string {
    if (this.admitted === 'any') return 'every local user (auth.local-users: any)';
    const owner = this.ownerUid === 0 ? 'its owner, root' : `its owner (${this.nameOf(this.ownerUid).replace(/ \(uid (\d+)\)$/, ', uid $1')}) and root`;
    const extra = [...this.admitted].filter((u) => u !== 0 && u !== this.ownerUid).map((u) => this.nameOf(u));
    return extra.length ? `${owner}, and ${extra.join(', ')} (auth.local-users)` : `only ${owner}`;
  }

  /** PERMISSION_DENIED for a connection from `uid`, naming the rule and the setting that widens it. */
  refusal(uid: number): StatusError {
    const name = this.nameOf(uid);
    const bare = /^(\S+) \(uid/.exec(name)?.[1] ?? String(uid);
    return new StatusError(
      Code.PERMISSION_DENIED,
      `without access tokens this reexec serves ${this.describe()}; this connection comes from ${name}. ` +
        `To admit other local users, set \`auth.local-users: [${bare}]\` (or \`any\`) in ${this.configHint} and restart reexec, or give them access tokens (auth.token-file)`,
    );
  }
}
