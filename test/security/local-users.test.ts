import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { Code } from '../../src/util/status-error.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { cannotCreateUsers, createTestUser, grpcCallAs, type TestUser } from '../helpers/other-user.js';

const FIND_MISSING = '/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs';
const FETCH_BLOB = '/build.bazel.remote.asset.v1.Fetch/FetchBlob';
const missing = cannotCreateUsers();

/**
 * A second local user, created for this file, against daemons run by this (root) process:
 * refused by default over TCP (IPv4 and IPv6 loopback) and over the unix socket, admitted
 * when auth.local-users names it or says any.
 */
describe.skipIf(missing && !process.env.CI)(`another local user${missing ? ` (skipped: ${missing})` : ''}`, () => {
  let user: TestUser;
  let dir: string;
  const daemons: TestDaemon[] = [];
  const start = async (name: string, localUsers?: 'any' | string[]): Promise<{ tcp: string; tcp6: string; unix: string }> => {
    const sock = join(dir, `${name}.sock`);
    const d = await startTestDaemon((c) => {
      c.listen = ['127.0.0.1:0', '[::1]:0', `unix:${sock}`];
      if (localUsers) c.auth.localUsers = localUsers;
    });
    daemons.push(d);
    return { tcp: d.daemon.addresses[0]!, tcp6: d.daemon.addresses[1]!, unix: `unix:${sock}` };
  };
  let closed: { tcp: string; tcp6: string; unix: string };

  beforeAll(async () => {
    if (missing) throw new Error(`this test ${missing}`);
    user = createTestUser();
    // The sockets' directory is open to everyone: only the socket files' permissions decide.
    dir = mkdtempSync(join(tmpdir(), 'reexec-users-'));
    chmodSync(dir, 0o755);
    closed = await start('owner-only');
  });
  afterAll(async () => {
    for (const d of daemons) await d.stop();
    user?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("serves the daemon's own user over every listener", async () => {
    for (const target of [closed.tcp, closed.tcp6, closed.unix]) {
      expect(await grpcCallAs({ uid: process.getuid!(), gid: process.getgid!() }, target, FIND_MISSING), target).toMatchObject({ code: Code.OK });
    }
    expect(await call(daemons[0]!.clients.cas, 'FindMissingBlobs', { blobDigests: [] })).toBeDefined();
  });

  it('refuses another user over TCP with PERMISSION_DENIED naming the rule and the setting that widens it', async () => {
    for (const target of [closed.tcp, closed.tcp6]) {
      const r = await grpcCallAs(user, target, FIND_MISSING);
      expect(r.code, `${target}: ${JSON.stringify(r)}`).toBe(Code.PERMISSION_DENIED);
      expect(r.message).toContain('only its owner');
      expect(r.message).toContain(`this connection comes from ${user.name} (uid ${user.uid})`);
      expect(r.message).toContain(`auth.local-users: [${user.name}]`);
    }
  });

  it('keeps the unix socket closed to another user (mode 0600: the kernel refuses the connection)', async () => {
    expect(statSync(closed.unix.slice(5)).mode & 0o777).toBe(0o600);
    const r = await grpcCallAs(user, closed.unix, FIND_MISSING);
    expect(r.error).toBe('EACCES');
  });

  it("still answers BuildStream's Remote Asset probe with INVALID_ARGUMENT, whoever asks", async () => {
    const r = await grpcCallAs(user, closed.tcp, FETCH_BLOB);
    expect(r.code).toBe(Code.INVALID_ARGUMENT);
  });

  it('admits a user named in auth.local-users over TCP and the unix socket (an ACL entry for it)', async () => {
    const open = await start('listed', [user.name]);
    for (const target of [open.tcp, open.tcp6, open.unix]) {
      expect(await grpcCallAs(user, target, FIND_MISSING), target).toMatchObject({ code: Code.OK });
    }
    expect(statSync(open.unix.slice(5)).mode & 0o077).not.toBe(0o066);
  });

  it('admits every local user with auth.local-users: any (socket mode 0666)', async () => {
    const open = await start('any', 'any');
    expect(statSync(open.unix.slice(5)).mode & 0o777).toBe(0o666);
    for (const target of [open.tcp, open.unix]) {
      expect(await grpcCallAs(user, target, FIND_MISSING), target).toMatchObject({ code: Code.OK });
    }
  });
});
