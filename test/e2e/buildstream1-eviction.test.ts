import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { BST_BUSYBOX, bst1Missing, bst1SkipReason, makeBst1Project, type Bst1Project } from '../helpers/bst1-project.js';
import { gcSummary } from '../helpers/gc.js';
import { describeRun, removeTree } from '../helpers/run-client.js';

/**
 * BuildStream 1.6 (Debian 12's `buildstream`) with reexec as its artifact cache, across an
 * eviction: after `reexec gc --target 0` the artifacts' blobs are gone, so the artifacts
 * (Remote Asset bindings) are misses, never half-served: bst builds again, pushes again, and
 * the next empty-cache build pulls. (Set-up as in buildstream1.test.ts.)
 */
const missing = bst1Missing;
const skipReason = bst1SkipReason;
if (skipReason) console.warn(`BuildStream 1.6 eviction end-to-end test ${skipReason}`);

const TIMEOUT = 5 * 60_000;

describe.skipIf(missing.length > 0)(`BuildStream 1.6 across an eviction${skipReason ? ` (${skipReason})` : ''}`, () => {
  let daemon: DaemonProcess | undefined;
  let tmp: string;
  let p: Bst1Project;
  const bst = (...args: string[]) => p.bst(...args);

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'reexec-bst1-gc-'));
    // No grace period: everything can be evicted on request.
    const config = join(tmp, 'reexec.yaml');
    writeFileSync(config, 'storage:\n  grace-period: 0\nmetrics:\n  listen: off\nexecution:\n  enabled: false\n');
    daemon = await startDaemonProcess({ dataDir: join(tmp, 'server'), args: ['--config', config] });
    p = makeBst1Project(tmp, daemon.port, TIMEOUT - 10_000);
  });

  afterAll(async () => {
    await daemon?.stop();
    if (tmp) removeTree(tmp);
  });

  it(
    'builds again after its artifacts were evicted, pushes again, then pulls',
    async () => {
      const d = daemon!;
      const remote = `http://127.0.0.1:${d.port}`;
      const first = await bst('build', 'hello.bst');
      expect(first.code, describeRun('bst build', first)).toBe(0);
      expect(first.output.match(new RegExp(`Pushed artifact [0-9a-f]+ -> ${remote}`, 'g')) ?? [], describeRun('bst build', first)).toHaveLength(2);

      await new Promise((r) => setTimeout(r, 1100));
      const summary = await gcSummary(d.port, '--target', '0');
      expect(summary.freedBlobs).toBeGreaterThan(0);
      expect(summary.after.bytes).toBe(0);

      // Nothing to pull: both elements are built and pushed again.
      removeTree(join(p.cacheDir, 'artifactdir'));
      const second = await bst('build', 'hello.bst');
      expect(second.code, describeRun('bst build after gc', second)).toBe(0);
      expect(second.output, describeRun('bst build after gc', second)).not.toMatch(/Pulled artifact/);
      expect(second.output.match(new RegExp(`Pushed artifact [0-9a-f]+ -> ${remote}`, 'g')) ?? [], describeRun('bst build after gc', second)).toHaveLength(2);

      // And now the server has them whole again.
      removeTree(join(p.cacheDir, 'artifactdir'));
      const third = await bst('build', 'hello.bst');
      expect(third.code, describeRun('bst build', third)).toBe(0);
      expect(third.output, describeRun('bst build', third)).toMatch(/Pulled artifact [0-9a-f]+ <- /);
      expect(third.output, describeRun('bst build', third)).toMatch(/Build Queue:\s+processed 0\b/);
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
});
