import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait.js';
import { bazelSkipReason as skipReason, grpcEndpoint, makeBazelWorkspace, type BazelWorkspace } from '../helpers/bazel-workspace.js';
import { freePort, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { gcSummary } from '../helpers/gc.js';
import { describeRun } from '../helpers/run-client.js';

/**
 * Bazel 4.2 (Debian 12's `bazel-bootstrap`) with reexec as its remote cache, on a budget
 * smaller than two builds: the second build pushes the CAS past its high watermark, background
 * eviction takes the first build's outputs, and Bazel keeps working: the evicted actions are
 * cache misses (never a hit with missing blobs), rebuilt and uploaded again; after
 * `reexec gc --target 0` everything is rebuilt. No build fails, no remote-cache warning.
 */
if (skipReason) console.warn(`Bazel eviction end-to-end test ${skipReason}`);

const TIMEOUT = 15 * 60_000;
const MiB = 1024 * 1024;
const RULES = ['one', 'two', 'three', 'four'];

describe.skipIf(!!skipReason)(`Bazel 4.2 across an eviction${skipReason ? ` (${skipReason})` : ''}`, () => {
  let daemon: DaemonProcess | undefined;
  let ws: BazelWorkspace | undefined;
  let tmp: string;
  let workspace: string;
  let configFile: string;
  const run = randomBytes(6).toString('hex');

  const bazel = (...args: string[]) => ws!.bazel(...args);
  /** BUILD with four genrules of 1 MiB each, distinct for `variant`. */
  const writeBuild = (variant: string) =>
    writeFileSync(
      join(workspace, 'BUILD'),
      RULES.map(
        (r) => `
genrule(
    name = "${r}",
    outs = ["${r}.bin"],
    cmd = "(echo '${variant} ${r}'; head -c ${MiB} /dev/zero) > $@",
)`,
      ).join('\n'),
    );
  /** clean, then build; resolves to the number of remote cache hits. */
  let lastBuild = '';
  const cleanBuild = async (variant: string, opts: { refusals?: boolean } = {}): Promise<number> => {
    // Access times have a resolution of one second: keep builds apart in them.
    await new Promise((r) => setTimeout(r, 1100));
    writeBuild(variant);
    const clean = await bazel('clean');
    expect(clean.code, describeRun('bazel clean', clean)).toBe(0);
    const b = await ws!.build(`--remote_cache=${grpcEndpoint(daemon!.port)}`, '//...');
    lastBuild = b.output;
    expect(b.code, describeRun(`bazel build (${variant})`, b)).toBe(0);
    // Never a failed download ("Missing digest", CacheNotFoundException); failed uploads only when told.
    expect(b.output, describeRun(`bazel build (${variant})`, b)).not.toMatch(/Missing digest|CacheNotFound/i);
    if (!opts.refusals) expect(b.output, describeRun(`bazel build (${variant})`, b)).not.toMatch(/WARNING: .*(remote|cache)/i);
    for (const r of RULES) {
      const out = readFileSync(join(workspace, 'bazel-bin', `${r}.bin`));
      expect(out.subarray(0, 40).toString()).toBe(`${variant} ${r}\n`.padEnd(40, '\0').slice(0, 40));
      expect(out.length).toBe(`${variant} ${r}\n`.length + MiB);
    }
    return Number(/(\d+) remote cache hit/.exec(b.output)?.[1] ?? 0);
  };
  const casBytes = async (): Promise<number> => (await gcSummary(daemon!.port, '--dry-run')).before.bytes as number;

  beforeAll(async () => {
    ws = makeBazelWorkspace('reexec-bazel-gc-', 5 * 60_000);
    ({ tmp, workspace } = ws);
    const port = await freePort();
    configFile = join(tmp, 'config.yaml');
    // One build's outputs (4 MiB) fit between the marks; two builds' pass the high one.
    writeFileSync(
      configFile,
      [
        `listen: 127.0.0.1:${port}`,
        'storage:',
        '  max-bytes: 6MiB',
        '  high-watermark: 90%',
        '  low-watermark: 80%',
        // Room for a whole build's uploads while eviction catches up: this test is about eviction, not refusal.
        '  hard-limit: 300%',
        // Builds a few seconds apart must be told apart by access times alone.
        '  grace-period: 0',
        'metrics:',
        '  listen: off',
        'execution:',
        '  enabled: false',
        '',
      ].join('\n'),
    );
    daemon = await startDaemonProcess({ dataDir: join(tmp, 'server'), listen: [`127.0.0.1:${port}`], args: ['--config', configFile] });
  }, 60_000);

  afterAll(async () => {
    await ws?.shutdown();
    await daemon?.stop();
    ws?.remove();
  });

  it(
    'keeps building, with misses for what was evicted and hits for what remains',
    async () => {
      const a = `A-${run}`;
      const b = `B-${run}`;
      expect(await cleanBuild(a)).toBe(0);
      expect(await cleanBuild(a)).toBe(4);
      // Build B: its uploads take the CAS past the high watermark; A's outputs (older) go.
      expect(await cleanBuild(b)).toBe(0);
      await waitFor('background eviction to bring the CAS under the low watermark', async () => (await casBytes()) <= 0.8 * 6 * MiB);
      // B (the most recent) is still served whole.
      expect(await cleanBuild(b)).toBe(4);
      // A was evicted: misses, rebuilt, uploaded again; never a hit with missing blobs.
      expect(await cleanBuild(a)).toBeLessThan(4);
      expect(await cleanBuild(a)).toBe(4);

      // Everything evicted on request: Bazel rebuilds everything, then hits again.
      expect((await gcSummary(daemon!.port, '--target', '0')).after.bytes).toBe(0);
      expect(await cleanBuild(a)).toBe(0);
      expect(await cleanBuild(a)).toBe(4);

      expect(daemon!.running(), `reexec died:\n${daemon!.output()}`).toBe(true);
      expect(daemon!.errorLines()).toEqual([]);
      expect(daemon!.output()).toMatch(/past its high watermark/);
    },
    TIMEOUT,
  );

  it(
    'builds on when the cache is full and refuses its uploads',
    async () => {
      await daemon!.stop();
      // Half a build fits; everything is within the grace period, so nothing can be evicted.
      writeFileSync(
        configFile,
        readFileSync(configFile, 'utf8').replace(/storage:[\s\S]*?metrics:/, 'storage:\n  max-bytes: 2MiB\n  hard-limit: 100%\n  grace-period: 10m\nmetrics:'),
      );
      daemon = await startDaemonProcess({ dataDir: join(tmp, 'server-full'), listen: [`127.0.0.1:${daemon!.port}`], args: ['--config', configFile] });
      const c = `C-${run}`;
      await cleanBuild(c, { refusals: true });
      // Bazel 4.2 warns without the status; the build succeeds and the CAS stays under its limit.
      expect(lastBuild).toMatch(/WARNING: Writing to Remote Cache:\s+Error while uploading artifact/);
      expect(await casBytes()).toBeLessThanOrEqual(2 * MiB);
      expect(daemon!.running()).toBe(true);
      expect(daemon!.errorLines()).toEqual([]);
    },
    TIMEOUT,
  );
});
