import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { BST_BUSYBOX, bst1Missing, bst1SkipReason, makeBst1Project, type Bst1Project } from '../helpers/bst1-project.js';
import { describeRun, removeTree } from '../helpers/run-client.js';

/**
 * BuildStream 1.6 (Debian 12's `buildstream`) against a real reexec process, as an artifact
 * cache: build and push, drop the local cache, pull, check out. BuildStream 1.6 talks to the
 * server directly: Capabilities, CAS, ByteStream and Remote Asset Fetch/PushDirectory.
 */
const missing = bst1Missing;
const skipReason = bst1SkipReason;
if (skipReason) console.warn(`BuildStream 1.6 end-to-end test ${skipReason}`);

const TIMEOUT = 5 * 60_000;

describe.skipIf(missing.length > 0)(`BuildStream 1.6 artifact cache round trip${skipReason ? ` (${skipReason})` : ''}`, () => {
  let daemon: DaemonProcess | undefined;
  let tmp: string;
  let p: Bst1Project;
  const bst = (...args: string[]) => p.bst(...args);

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'reexec-bst1-'));
    daemon = await startDaemonProcess({ dataDir: join(tmp, 'server') });
    p = makeBst1Project(tmp, daemon.port, TIMEOUT - 10_000);
  });

  afterAll(async () => {
    await daemon?.stop();
    if (tmp) removeTree(tmp);
  });

  it(
    'builds and pushes, pulls into an empty local cache, and checks out the same files',
    async () => {
      const d = daemon!;
      const remote = `http://127.0.0.1:${d.port}`;

      const build = await bst('build', 'hello.bst');
      expect(build.code, describeRun('bst build', build)).toBe(0);
      // Both elements (the import and the manual one) are pushed to reexec.
      expect(build.output.match(new RegExp(`Pushed artifact [0-9a-f]+ -> ${remote}`, 'g')) ?? [], describeRun('bst build', build)).toHaveLength(2);
      expect(build.output).not.toMatch(/Failed to push|Remote .* does not support|Failed to initialize remote/i);

      removeTree(join(p.cacheDir, 'artifactdir'));
      const pull = await bst('pull', '--deps', 'all', 'hello.bst');
      expect(pull.code, describeRun('bst pull', pull)).toBe(0);
      expect(pull.output.match(new RegExp(`Pulled artifact [0-9a-f]+ <- ${remote}`, 'g')) ?? [], describeRun('bst pull', pull)).toHaveLength(2);

      const out = join(tmp, 'checkout');
      const checkout = await bst('checkout', 'hello.bst', out);
      expect(checkout.code, describeRun('bst checkout', checkout)).toBe(0);
      expect(readFileSync(join(out, 'share', 'hello', 'hello.txt'), 'utf8')).toBe(`${p.token}\n`);
      expect(readFileSync(join(out, 'share', 'hello', 'payload')).equals(readFileSync(BST_BUSYBOX!))).toBe(true);

      expect(d.running(), `reexec died:\n${d.output()}`).toBe(true);
      expect(d.errorLines()).toEqual([]);
    },
    TIMEOUT,
  );

  it(
    'bst build with an empty local cache pulls from reexec instead of building',
    async () => {
      const d = daemon!;
      removeTree(join(p.cacheDir, 'artifactdir'));
      removeTree(join(tmp, 'checkout'));
      const build = await bst('build', 'hello.bst');
      expect(build.code, describeRun('bst build', build)).toBe(0);
      expect(build.output, describeRun('bst build', build)).toMatch(/Pulled artifact [0-9a-f]+ <- /);
      expect(build.output, describeRun('bst build', build)).toMatch(/Build Queue:\s+processed 0\b/);
      expect(existsSync(join(p.cacheDir, 'artifactdir'))).toBe(true);

      expect(d.running(), `reexec died:\n${d.output()}`).toBe(true);
      expect(d.errorLines()).toEqual([]);
    },
    TIMEOUT,
  );
});
