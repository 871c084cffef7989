import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeBazel7Workspace, type Bazel7Workspace } from '../helpers/bazel7-workspace.js';
import { prepareClientsRoot, runInRoot } from '../helpers/clients-root.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { describeRun, isExecutable } from '../helpers/run-client.js';

/**
 * Bazel 7.7 (Debian testing's bazel-bootstrap, in the clients root) with reexec as its remote
 * executor: a genrule and a cc_binary that includes its output run on reexec in the host-tools
 * sandbox. Bazel configured its C++ toolchain in the clients root (gcc 14), so reexec shows
 * host-tools actions that root as "/" (execution.host-tools.root): Bazel checks that a remote
 * compile includes nothing from outside the toolchain it knows. Bazel 6.3+ sends output_paths
 * and the legacy output_files together; after `bazel clean` everything is a remote cache hit.
 */
const clients = isExecutable('/usr/bin/bwrap') ? prepareClientsRoot() : { skip: 'install the Debian package bubblewrap (reexec runs actions in bwrap)' };
const skipReason = clients.skip ? `skipped: ${clients.skip}` : '';
if (skipReason) console.warn(`Bazel 7 remote execution end-to-end test ${skipReason}`);

const TIMEOUT = 10 * 60_000;

describe.skipIf(!!clients.skip)(`Bazel 7 remote execution${skipReason ? ` (${skipReason})` : ''}`, () => {
  const root = clients.root!;
  let daemon: DaemonProcess | undefined;
  let ws: Bazel7Workspace | undefined;
  // New to the server on every run, so the first build cannot hit the cache.
  const token = randomBytes(8).toString('hex');

  const build = () =>
    ws!.build(
      `--remote_executor=grpc://127.0.0.1:${daemon!.port}`,
      // genrules and gcc from the toolchain root: reexec's host-tools sandbox.
      '--remote_default_exec_properties=reexec-sandbox=host-tools',
      '--jobs=4',
      '//:hello',
    );
  const runHello = () => runInRoot(root, [`${ws!.workspaceInside}/bazel-bin/hello`], { timeoutMs: 60_000 });

  beforeAll(async () => {
    // The greeting carries the token: every action's inputs are new to the server.
    ws = makeBazel7Workspace(root, 'reexec-bazel7-rex-', TIMEOUT - 30_000, { greeting: `hello from bazel ${token}` });
    const config = join(ws.work, 'reexec.yaml');
    writeFileSync(config, `execution:\n  host-tools:\n    root: ${JSON.stringify(root)}\n`);
    daemon = await startDaemonProcess({ dataDir: join(ws.work, 'server'), args: ['--config', config] });
  });

  afterAll(async () => {
    // Always stop the Bazel server, even after a failure: it would outlive the test run.
    await ws?.shutdown();
    await daemon?.stop();
    ws?.remove();
  });

  it(
    'runs the genrule and the cc_binary on reexec; the binary prints its greeting; after bazel clean all are remote cache hits',
    async () => {
      const d = daemon!;
      const first = await build();
      const why = describeRun('bazel build //:hello', first);
      expect(first.code, why).toBe(0);
      // "INFO: 5 processes: 2 internal, 3 remote." (genrule, compile, link)
      const remote = /(\d+) remote\b(?! cache)/.exec(first.output);
      expect(remote, why).not.toBeNull();
      expect(Number(remote![1]), why).toBe(3);
      expect(first.output, why).not.toMatch(/remote cache hit/);
      expect(first.output, why).not.toMatch(/\d+ (linux-sandbox|processwrapper-sandbox|local)\b/);
      expect(first.output, why).not.toMatch(/WARNING: .*(remote|cache|execut)/i);
      const hello = await runHello();
      expect(hello.output, describeRun('bazel-bin/hello', hello)).toBe(`hello from bazel ${token}\n`);
      expect(hello.code).toBe(0);

      const clean = await ws!.bazel('clean');
      expect(clean.code, describeRun('bazel clean', clean)).toBe(0);

      const second = await build();
      const why2 = describeRun('bazel build //:hello after bazel clean', second);
      expect(second.code, why2).toBe(0);
      // "INFO: 5 processes: 3 remote cache hit, 2 internal."
      const hits = /(\d+) remote cache hit/.exec(second.output);
      expect(hits, why2).not.toBeNull();
      expect(Number(hits![1]), why2).toBe(3);
      expect(second.output, why2).not.toMatch(/\d+ remote\b(?! cache)/);
      expect(second.output, why2).not.toMatch(/WARNING: .*(remote|cache|execut)/i);
      const again = await runHello();
      expect(again.output, describeRun('bazel-bin/hello (cache hits)', again)).toBe(`hello from bazel ${token}\n`);

      expect(d.running(), `reexec died:\n${d.output()}`).toBe(true);
      expect(d.errorLines()).toEqual([]);
    },
    TIMEOUT,
  );
});
