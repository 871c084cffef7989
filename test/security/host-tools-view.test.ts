import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { execute, readBlob, uploadAction, uploadBlob } from '../helpers/exec-client.js';
import { cannotCreateUsers, createTestUser, type TestUser } from '../helpers/other-user.js';
import { Digest } from '../../src/digest/digest.js';
import { re } from '../../src/proto.js';

const missing = !findBubblewrap() ? 'bubblewrap (apt-get install bubblewrap)' : cannotCreateUsers();

/**
 * What a host-tools action sees of the host. The actions run as a user made for this test
 * (execution.run-as), which owns the secrets planted here, the way a daemon run by a normal
 * user owns its home and token file: only the sandbox's view, not file permissions, keeps
 * them from the action.
 */
describe.skipIf(missing && !process.env.CI)(`the host-tools sandbox hides what is private${missing ? ` (skipped: ${missing})` : ''}`, () => {
  let user: TestUser;
  let d: TestDaemon;
  let place: string;
  let home: string;
  let tokenFile: string;
  const secret = `secret-${randomBytes(8).toString('hex')}`;
  const savedHome = process.env.HOME;
  let emptyRoot: Digest;

  beforeAll(async () => {
    if (missing) throw new Error(`this test needs ${missing}`);
    user = createTestUser();
    // Somewhere no default hides (not /home, /root, /tmp or /var): only the daemon's own rules apply.
    place = mkdtempSync(join(existsSync('/srv') ? '/srv' : '/opt', 'reexec-view-'));
    chmodSync(place, 0o755);
    home = join(place, 'home');
    mkdirSync(home, { mode: 0o700 });
    writeFileSync(join(home, 'private.txt'), secret + '\n', { mode: 0o600 });
    tokenFile = join(place, 'tokens.yaml');
    writeFileSync(tokenFile, `${secret}-token: all\n`, { mode: 0o600 });
    for (const p of [home, join(home, 'private.txt'), tokenFile]) chownSync(p, user.uid, user.gid);
    process.env.HOME = home; // the daemon user's $HOME, as os.homedir() reads it
    d = await startTestDaemon((c) => {
      c.execution.runAs = user.name;
      c.auth = { tokenFile, anonymous: ['read', 'write', 'execute'], localUsers: [] };
    });
    emptyRoot = Digest.fromProto((await uploadDirectory(d)).toProto(), Digest.compute(Buffer.alloc(0)).fn, 'root');
  });
  afterAll(async () => {
    process.env.HOME = savedHome;
    await d?.stop();
    user?.remove();
    if (place) rmSync(place, { recursive: true, force: true });
  });

  const uploadDirectory = (t: TestDaemon): Promise<Digest> => uploadBlob(t.clients, re.Directory.encode({}).finish());

  const runHostTools = async (script: string): Promise<string> => {
    const action = await uploadAction(d.clients, emptyRoot, { args: ['/bin/sh', '-c', script], platform: [['OSFamily', 'linux'], ['reexec-sandbox', 'host-tools']], doNotCache: true });
    const { response, error } = await execute(d.clients, action);
    expect(error?.details).toBeUndefined();
    expect(response!.status?.code ?? 0, response!.status?.message ?? '').toBe(0);
    const out = (await readBlob(d.clients, response!.result!.stdoutDigest)).toString();
    expect(response!.result!.exitCode, (await readBlob(d.clients, response!.result!.stderrDigest)).toString()).toBe(0);
    return out;
  };

  it("cannot read /etc/shadow, a file in the daemon user's home, or the token file (each is empty or gone)", async () => {
    const out = await runHostTools(
      [
        `cat ${home}/private.txt 2>/dev/null`,
        `cat ${tokenFile} 2>/dev/null`,
        'test -s /etc/shadow && echo SHADOW-HAS-CONTENT',
        'test -s /etc/gshadow && echo GSHADOW-HAS-CONTENT',
        `ls -A ${home} 2>/dev/null | grep -q . && echo HOME-LISTED`,
        'ls -A /root 2>/dev/null | grep -q . && echo ROOT-HOME-LISTED',
        'ls -A /home 2>/dev/null | grep -q . && echo HOMES-LISTED',
        'ls /etc/ssh/ 2>/dev/null | grep _key$ | while read k; do test -s /etc/ssh/$k && echo HOST-KEY-HAS-CONTENT; done',
        'echo done',
      ].join('; '),
    );
    expect(out).not.toContain(secret);
    expect(out).toBe('done\n');
  });

  it('still sees what tools need: compilers and shells, /etc, the package database, locale data; /tmp and /var/tmp are writable', async () => {
    const out = await runHostTools(
      [
        'test -x /bin/sh && echo sh',
        'test -d /usr/include && echo include',
        'test -e /etc/alternatives && echo alternatives',
        'test -e /etc/passwd && echo passwd',
        'test -d /var/lib/dpkg/info && echo dpkg',
        'echo x > /tmp/x && echo x > /var/tmp/x && echo scratch',
      ].join('; '),
    );
    expect(out).toBe(['sh', 'include', 'alternatives', 'passwd', 'dpkg', 'scratch', ''].join('\n'));
  });
});
