import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BAZEL, grpcEndpoint, makeBazelWorkspace, type BazelWorkspace } from '../helpers/bazel-workspace.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { describeRun, isExecutable, runClient } from '../helpers/run-client.js';

/**
 * Bazel 4.2 (Debian 12's `bazel-bootstrap`) with reexec as its remote executor: genrules run
 * on reexec in the host-tools sandbox (the host's /bin/bash, the input root as working tree),
 * their outputs come back right, and after `bazel clean` the same actions are remote cache
 * hits. Bazel uses Capabilities, Execute (stream), WaitExecution, the action cache and CAS.
 */
const missing = [
  !isExecutable(BAZEL) && 'bazel-bootstrap (for /usr/bin/bazel)',
  !isExecutable('/usr/bin/bwrap') && 'bubblewrap (reexec runs actions in bwrap)',
].filter((m): m is string => Boolean(m));
const skipReason = missing.length ? `skipped: install the Debian package${missing.length > 1 ? 's' : ''} ${missing.join(', ')}` : '';
if (skipReason) console.warn(`Bazel remote execution end-to-end test ${skipReason}`);

const TIMEOUT = 10 * 60_000;

describe.skipIf(missing.length > 0)(`Bazel 4.2 remote execution${skipReason ? ` (${skipReason})` : ''}`, () => {
  let daemon: DaemonProcess | undefined;
  let ws: BazelWorkspace | undefined;
  let workspace: string;
  // New to the server on every run, so the first build cannot hit the cache.
  const token = randomBytes(8).toString('hex');

  const bazel = (...args: string[]) => ws!.bazel(...args);
  const build = (target = '//:all') =>
    ws!.build(
      `--remote_executor=${grpcEndpoint(daemon!.port)}`,
      // genrules run /bin/bash and coreutils from the host: reexec's host-tools sandbox.
      '--remote_default_exec_properties=reexec-sandbox=host-tools',
      '--jobs=4',
      target,
    );

  beforeAll(async () => {
    ws = makeBazelWorkspace('reexec-bazel-rex-', TIMEOUT - 30_000);
    workspace = ws.workspace;
    mkdirSync(join(workspace, 'src'));
    daemon = await startDaemonProcess({ dataDir: join(ws.tmp, 'server') });
    mkdirSync(join(workspace, 'fail'));
    writeFileSync(
      join(workspace, 'fail', 'BUILD'),
      `
genrule(
    name = "boom",
    outs = ["boom.txt"],
    cmd = "echo partial > $@; echo 'boom ${token} on stderr' >&2; exit 3",
)
`,
    );
    writeFileSync(join(workspace, 'src', 'words.txt'), `zebra\napple ${token}\nmango\n`);
    writeFileSync(join(workspace, 'src', 'tool.sh'), '#!/bin/bash\nset -eu\necho "tool ran in $(pwd | sed s,^/tmp/reexec-build.*,SANDBOX,) as $(id -u)"\nwc -l < "$1"\n');
    writeFileSync(
      join(workspace, 'BUILD'),
      `
genrule(
    name = "sorted",
    srcs = ["src/words.txt"],
    outs = ["sorted.txt"],
    cmd = "sort $(location src/words.txt) > $@",
)

genrule(
    name = "shout",
    srcs = [":sorted"],
    outs = ["shout.txt"],
    cmd = "tr a-z A-Z < $(location :sorted) > $@",
)

# A tool from the input root, a pipeline, and what the action saw of its machine.
genrule(
    name = "report",
    srcs = ["src/tool.sh", ":shout"],
    outs = ["report.txt", "nested/dir/bash.txt"],
    cmd = "bash $(location src/tool.sh) $(location :shout) > $(location report.txt); " +
          "echo \\"$$BASH_VERSION\\" | cut -d. -f1 > $(location nested/dir/bash.txt)",
)

# A directory output (declared through a tree artifact is not possible in a genrule): an
# executable output instead, whose mode must survive the round trip.
genrule(
    name = "script",
    outs = ["hello.sh"],
    cmd = "printf '#!/bin/sh\\\\necho hello ${token}\\\\n' > $@ && chmod +x $@",
    executable = True,
)

genrule(
    name = "empty",
    outs = ["empty.txt"],
    cmd = "touch $@",
)
`,
    );
  });

  afterAll(async () => {
    // Always stop the Bazel server, even after a failure: it would outlive the test run.
    await ws?.shutdown();
    await daemon?.stop();
    ws?.remove();
  });

  const outputs = () => {
    const bin = join(workspace, 'bazel-bin');
    return {
      sorted: readFileSync(join(bin, 'sorted.txt'), 'utf8'),
      shout: readFileSync(join(bin, 'shout.txt'), 'utf8'),
      report: readFileSync(join(bin, 'report.txt'), 'utf8'),
      bash: readFileSync(join(bin, 'nested', 'dir', 'bash.txt'), 'utf8'),
      script: readFileSync(join(bin, 'hello.sh'), 'utf8'),
      empty: readFileSync(join(bin, 'empty.txt'), 'utf8'),
    };
  };
  const expectCorrect = (o: ReturnType<typeof outputs>) => {
    expect(o.sorted).toBe(`apple ${token}\nmango\nzebra\n`);
    expect(o.shout).toBe(`APPLE ${token.toUpperCase()}\nMANGO\nZEBRA\n`);
    // The host-tools sandbox: the input root is the working tree at /tmp/reexec-build, uid 0.
    expect(o.report).toBe('tool ran in SANDBOX as 0\n3\n');
    expect(Number(o.bash.trim())).toBeGreaterThanOrEqual(4);
    expect(o.script).toBe(`#!/bin/sh\necho hello ${token}\n`);
    expect(o.empty).toBe('');
  };

  it(
    'runs genrules on reexec, then serves them from its action cache after bazel clean',
    async () => {
      const d = daemon!;
      const first = await build();
      expect(first.code, describeRun('bazel build', first)).toBe(0);
      // "INFO: 6 processes: 1 internal, 5 remote."
      const remote = /(\d+) remote\b(?! cache)/.exec(first.output);
      expect(remote, describeRun('first bazel build', first)).not.toBeNull();
      expect(Number(remote![1])).toBe(5);
      expect(first.output).not.toMatch(/remote cache hit/);
      expect(first.output).not.toMatch(/\d+ (linux-sandbox|processwrapper-sandbox|local)\b/);
      expect(first.output, describeRun('first bazel build', first)).not.toMatch(/WARNING: .*(remote|cache|execut)/i);
      const before = outputs();
      expectCorrect(before);
      // The executable bit came back from the server.
      const hello = await runClient(join(workspace, 'bazel-bin', 'hello.sh'), [], { cwd: workspace });
      expect(hello.output).toBe(`hello ${token}\n`);

      const clean = await bazel('clean');
      expect(clean.code, describeRun('bazel clean', clean)).toBe(0);

      const second = await build();
      expect(second.code, describeRun('bazel build', second)).toBe(0);
      // "INFO: 6 processes: 5 remote cache hit, 1 internal."
      const hits = /(\d+) remote cache hit/.exec(second.output);
      expect(hits, describeRun('second bazel build', second)).not.toBeNull();
      expect(Number(hits![1])).toBe(5);
      expect(second.output).not.toMatch(/\d+ remote\b(?! cache)/);
      expect(second.output).not.toMatch(/WARNING: .*(remote|cache|execut)/i);
      const after = outputs();
      expectCorrect(after);
      expect(after).toEqual(before);

      expect(d.running(), `reexec died:\n${d.output()}`).toBe(true);
      expect(d.errorLines()).toEqual([]);
    },
    TIMEOUT,
  );

  it(
    'reports a failing action with its exit code and stderr, and does not cache the failure',
    async () => {
      const d = daemon!;
      for (const attempt of [1, 2]) {
        const run = await build('//fail:boom');
        expect(run.code, describeRun(`bazel build //fail:boom (attempt ${attempt})`, run)).not.toBe(0);
        expect(run.output, describeRun('bazel build //fail:boom', run)).toContain(`boom ${token} on stderr`);
        expect(run.output, describeRun('bazel build //fail:boom', run)).toContain('(Exit 3)');
        // Never a cache hit: failed results stay out of the action cache.
        expect(run.output).not.toMatch(/remote cache hit/);
      }
      expect(d.running(), `reexec died:\n${d.output()}`).toBe(true);
      expect(d.errorLines()).toEqual([]);
    },
    TIMEOUT,
  );
});
