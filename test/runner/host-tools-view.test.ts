import { describe, expect, it } from 'vitest';
import { HOST_TOOLS_HIDDEN, insideRoot, planHostView, type HostMount, type PathKind } from '../../src/runner/host-tools-view.js';

/** A host described by its directories and files. */
const host = (dirs: string[], files: string[] = []) => (p: string): PathKind => (dirs.includes(p) ? 'dir' : files.includes(p) ? 'file' : undefined);
const DIRS = ['/home', '/home/alice', '/home/alice/tools', '/home/alice/tools/secret', '/root', '/var/lib', '/var/lib/dpkg', '/var/lib/mysql', '/var/tmp', '/tmp', '/run', '/var/log', '/srv/reexec', '/srv/reexec/data', '/etc/ssl/private'];
const FILES = ['/etc/shadow', '/etc/gshadow', '/srv/reexec/tokens.yaml', '/srv/reexec/server.key', '/root/.config/reexec/tokens.yaml'];
const all = (): boolean => true;
const plan = (s: Partial<Parameters<typeof planHostView>[0]>, reachable: (p: string) => boolean = all): HostMount[] =>
  planHostView({ hide: [], expose: [], secrets: [], ...s }, host(DIRS, FILES), reachable);
const line = (m: HostMount): string => `${m.kind} ${m.path}`;

describe('what host-tools actions see of the host', () => {
  it('empties /var/tmp and /run (the runner empties /tmp); hides homes, shadow files, private keys and /var/lib except what tools read', () => {
    expect(plan({ home: '/root' }).map(line)).toEqual([
      'tmpfs /var/tmp',
      'tmpfs /run',
      'null /etc/gshadow',
      'null /etc/shadow',
      'tmpfs /etc/ssl/private',
      'tmpfs /home',
      'tmpfs /root',
      'tmpfs /var/lib',
      'tmpfs /var/log',
      'ro-bind /var/lib/dpkg',
    ]);
    expect(HOST_TOOLS_HIDDEN).toEqual(expect.arrayContaining(['/home', '/root', '/etc/shadow', '/etc/gshadow', '/etc/ssh/*_key', '/var/lib']));
  });

  it("hides the daemon's secrets last, even inside what expose shows; skips those already hidden", () => {
    const m = plan({ expose: ['/home/alice/tools'], secrets: ['/srv/reexec/data', '/srv/reexec/tokens.yaml', '/home/alice/tools/secret', '/root/.config/reexec/tokens.yaml'] }).map(line);
    // /root is hidden whole: its token file needs nothing more.
    expect(m.slice(-5)).toEqual(['ro-bind /home/alice/tools', 'ro-bind /var/lib/dpkg', 'tmpfs /home/alice/tools/secret', 'tmpfs /srv/reexec/data', 'null /srv/reexec/tokens.yaml']);
  });

  it('expose un-hides a hidden path, binds one back inside a hidden directory; hide adds paths', () => {
    const m = plan({ expose: ['/var/log', '/var/lib/mysql'], hide: ['/srv/reexec'] }).map(line);
    expect(m).not.toContain('tmpfs /var/log');
    expect(m).toContain('ro-bind /var/lib/mysql');
    expect(m).toContain('tmpfs /srv/reexec');
    // A hidden path inside an exposed one is hidden again after it is bound back.
    const again = plan({ expose: ['/home/alice/tools'], hide: ['/home/alice/tools/secret'] }).map(line);
    expect(again.indexOf('tmpfs /home/alice/tools/secret')).toBeGreaterThan(again.indexOf('ro-bind /home/alice/tools'));
  });

  it('never hides the system itself (a $HOME of / or /var) and leaves out what is absent', () => {
    expect(plan({ home: '/' }).map((m) => m.path)).not.toContain('/');
    expect(plan({ hide: ['/usr', '/etc', '/nonexistent'] }).map((m) => m.path)).toEqual(expect.not.arrayContaining(['/usr', '/etc', '/nonexistent']));
  });

  it('leaves out what the sandbox user cannot reach (bubblewrap could not mount there, the action could not read it)', () => {
    const m = plan({ secrets: ['/srv/reexec/data', '/srv/reexec/tokens.yaml'] }, (p) => !p.startsWith('/srv/reexec')).map((x) => x.path);
    expect(m).not.toContain('/srv/reexec/data');
    expect(m).not.toContain('/srv/reexec/tokens.yaml');
  });

  it('with a host-tools root: looks at paths inside it; maps the daemon\'s secrets and home into it, leaving out those outside', () => {
    const seen: string[] = [];
    const kind = (p: string): PathKind => {
      seen.push(p);
      return host(DIRS, FILES)(p);
    };
    const m = planHostView({ root: '/srv/', hide: ['/var/log'], expose: [], secrets: ['/srv/reexec/data', '/var/lib/reexec', '/srv'], home: '/srv/reexec/tokens.yaml' }, kind, all).map(line);
    // Sandbox paths: /srv/reexec/data on the host is /reexec/data inside, which this host's
    // description does not have; /var/lib/reexec is outside the root; the root itself is never hidden.
    expect(m).not.toContain('tmpfs /srv/reexec/data');
    expect(m).not.toContain('tmpfs /var/lib/reexec');
    expect(seen).toContain('/reexec/data');
    expect(seen).toContain('/reexec/tokens.yaml');
    expect(seen).not.toContain('/srv');
    expect(m).toContain('tmpfs /var/log');
  });

  it('insideRoot: host paths as a sandbox rooted elsewhere sees them', () => {
    expect(insideRoot('/srv/root/var/data', '/srv/root/')).toBe('/var/data');
    expect(insideRoot('/srv/root', '/srv/root')).toBeUndefined();
    expect(insideRoot('/srv/rootless', '/srv/root')).toBeUndefined();
    expect(insideRoot('/elsewhere', '/srv/root')).toBeUndefined();
    expect(insideRoot('/etc/shadow', '/')).toBe('/etc/shadow');
  });
});
