import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveInRoot, type RootView } from '../../src/worker/root-path.js';

describe('resolveInRoot', () => {
  let root: string;
  let outside: string;
  let view: RootView;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'reexec-rootpath-'));
    outside = mkdtempSync(join(tmpdir(), 'reexec-outside-'));
    mkdirSync(join(root, 'usr', 'lib'), { recursive: true });
    symlinkSync('usr/lib', join(root, 'lib'));
    symlinkSync('/usr/lib', join(root, 'abs-lib'));
    symlinkSync(outside, join(root, 'host'));
    symlinkSync('../../../../../..' + outside, join(root, 'up'));
    symlinkSync('b', join(root, 'a'));
    symlinkSync('a', join(root, 'b'));
    mkdirSync(join(root, 'ro'));
    view = { hostPath: (rel) => join(root, rel), mountPoint: '/', readOnly: (rel) => rel === 'ro' || rel.startsWith('ro/') };
  });
  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  it('resolves symlinks in leading components inside the root, chroot-style', async () => {
    expect(await resolveInRoot(view, 'lib/x.so')).toBe('usr/lib/x.so');
    expect(await resolveInRoot(view, 'abs-lib/x.so')).toBe('usr/lib/x.so');
    expect(await resolveInRoot(view, 'lib')).toBe('lib');
    expect(await resolveInRoot(view, 'lib', { followLast: true })).toBe('usr/lib');
    expect(await resolveInRoot(view, '')).toBe('');
    // An absolute host path means the same path inside the root (where it does not exist).
    expect(await resolveInRoot(view, 'host/secret')).toBeUndefined();
    expect(await resolveInRoot(view, 'up/secret')).toBeUndefined();
  });

  it('gives up on loops and on paths through missing entries', async () => {
    expect(await resolveInRoot(view, 'a/x')).toBeUndefined();
    expect(await resolveInRoot(view, 'missing/x')).toBeUndefined();
    expect(await resolveInRoot(view, 'missing')).toBe('missing');
  });

  it('creates directories only inside the root and never in read-only places', async () => {
    expect(await resolveInRoot(view, 'host/made/deeper', { create: true, followLast: true })).toBe(outside.slice(1) + '/made/deeper');
    expect(existsSync(join(outside, 'made'))).toBe(false);
    expect(existsSync(join(root, outside.slice(1), 'made', 'deeper'))).toBe(true);
    expect(await resolveInRoot(view, 'ro/new', { create: true, followLast: true })).toBeUndefined();
    expect(existsSync(join(root, 'ro', 'new'))).toBe(false);
  });

  it('refuses absolute targets and ".." that leave a root mounted below "/" (host-tools)', async () => {
    const hostTools: RootView = { hostPath: (rel) => join(root, rel), mountPoint: '/tmp/reexec-build' };
    expect(await resolveInRoot(hostTools, 'abs-lib/x')).toBeUndefined();
    expect(await resolveInRoot(hostTools, 'lib/x')).toBe('usr/lib/x');
    expect(await resolveInRoot(hostTools, '../x')).toBeUndefined();
  });
});
