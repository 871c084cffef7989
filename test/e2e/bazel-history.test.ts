import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HistoryEntry } from '../../src/history/entry.js';
import { BAZEL, grpcEndpoint, makeBazelWorkspace, type BazelWorkspace } from '../helpers/bazel-workspace.js';
import { REEXEC_BIN, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { describeRun, isExecutable } from '../helpers/run-client.js';

/**
 * Bazel 4.2 (Debian 12) with reexec as its remote executor, and the action history: the
 * RequestMetadata Bazel sends, the source file changed between two builds named by
 * `explain`, and that file read in the action's host-tools sandbox with `reexec shell`.
 */
const missing = [!isExecutable(BAZEL) && 'bazel-bootstrap (for /usr/bin/bazel)', !isExecutable('/usr/bin/bwrap') && 'bubblewrap (reexec runs actions in bwrap)'].filter((m): m is string => Boolean(m));
const skipReason = missing.length ? `skipped: install the Debian package${missing.length > 1 ? 's' : ''} ${missing.join(', ')}` : '';
if (skipReason) console.warn(`Bazel action history end-to-end test ${skipReason}`);

const TIMEOUT = 10 * 60_000;

describe.skipIf(missing.length > 0)(`Bazel 4.2 in the action history${skipReason ? ` (${skipReason})` : ''}`, () => {
  let daemon: DaemonProcess | undefined;
  let ws: BazelWorkspace | undefined;
  const token = randomBytes(8).toString('hex');
  const reexec = (command: string, ...args: string[]) => execa(process.execPath, [REEXEC_BIN, command, '--endpoint', daemon!.address, ...args], { reject: false, timeout: 120_000, env: { CI: '' } });
  const history = async (...args: string[]): Promise<HistoryEntry[]> => {
    const r = await reexec('history', '--json', '--limit', '1000', ...args);
    expect(r.exitCode, r.stderr).toBe(0);
    return r.stdout.trim() ? r.stdout.trim().split('\n').map((l) => JSON.parse(l) as HistoryEntry) : [];
  };
  const build = () => ws!.build(`--remote_executor=${grpcEndpoint(daemon!.port)}`, '--remote_default_exec_properties=reexec-sandbox=host-tools', '//src:all');
  const words = (text: string) => writeFileSync(join(ws!.workspace, 'src', 'words.txt'), text);

  beforeAll(async () => {
    ws = makeBazelWorkspace('reexec-bazel-history-', TIMEOUT - 30_000);
    daemon = await startDaemonProcess({ dataDir: join(ws.tmp, 'server') });
    mkdirSync(join(ws.workspace, 'src'));
    words(`zebra\napple ${token}\n`);
    writeFileSync(join(ws.workspace, 'src', 'other.txt'), 'unchanged\n');
    writeFileSync(
      join(ws.workspace, 'src', 'BUILD'),
      `
genrule(
    name = "upper",
    srcs = ["words.txt", "other.txt"],
    outs = ["upper.txt"],
    cmd = "cat $(location words.txt) $(location other.txt) | tr a-z A-Z > $@",
)
`,
    );
  });

  afterAll(async () => {
    await ws?.shutdown();
    await daemon?.stop();
    ws?.remove();
  });

  it(
    "records Bazel's Executes with its RequestMetadata",
    async () => {
      const first = await build();
      expect(first.code, describeRun('bazel build', first)).toBe(0);
      const entries = await history('--tool', 'bazel');
      const ran = entries.filter((e) => e.kind === 'execute' && e.outcome === 'ran');
      expect(ran, JSON.stringify(entries, null, 1)).toHaveLength(1);
      const e = ran[0]!;
      expect(e.request?.tool).toBe('bazel');
      // (Debian's bootstrapped Bazel has no version to send.)
      expect(e.request).toMatchObject({ tool: 'bazel', mnemonic: 'Genrule', targetId: '//src:upper' });
      expect(e.request?.configurationId).toMatch(/^[0-9a-f]+$/);
      expect(e.request?.correlatedInvocationsId).toMatch(/^[0-9a-f-]{36}$/);
      expect(e.request?.invocationId).toMatch(/^[0-9a-f-]{36}$/);
      expect(e.request?.actionId).toMatch(/^[0-9a-f]{64}$/);
      expect(e.argv?.[0]).toBe('/bin/bash');
      expect(e.outputPaths).toEqual(['bazel-out/k8-fastbuild/bin/src/upper.txt']);
      expect(e.platform).toEqual([['reexec-sandbox', 'host-tools']]);
      expect(await history('--invocation', e.request!.invocationId!.slice(0, 8))).toEqual(entries.filter((x) => x.request?.invocationId === e.request!.invocationId));
      expect((await history('--target', '//src:upper')).map((x) => x.id)).toEqual(entries.filter((x) => x.request?.targetId === '//src:upper').map((x) => x.id));
      const table = await reexec('history', '--tool', 'bazel');
      expect(table.stdout).toMatch(/✓ ran +\S+ +[0-9a-f]{12} +bazel +\/\/src:upper · Genrule · \/bin\/bash -c/);
    },
    TIMEOUT,
  );

  it(
    'after one source file changes, `explain` names exactly that file, and `shell` reads it in the sandbox',
    async () => {
      const before = (await history('--kind', 'execute')).filter((e) => e.outcome === 'ran');
      words(`zebra\napple ${token}\nmango\n`);
      const second = await build();
      expect(second.code, describeRun('bazel build (changed source)', second)).toBe(0);
      const after = (await history('--kind', 'execute')).filter((e) => e.outcome === 'ran');
      const rebuilt = after.find((e) => !before.some((b) => b.id === e.id));
      expect(rebuilt, JSON.stringify(after, null, 1)).toBeDefined();

      const x = await reexec('explain', rebuilt!.action.slice(0, 12), '--json');
      expect(x.exitCode, x.stderr).toBe(0);
      const explanation = JSON.parse(x.stdout) as { against: string; chosenBy: string; arguments: unknown[]; environment: unknown[]; inputs: Array<{ path: string; change: string; kind: string }> };
      expect(explanation.against, x.stdout).toBe(before[0]!.action);
      expect(explanation.chosenBy).toBe('target');
      expect(explanation.arguments).toEqual([]);
      expect(explanation.environment).toEqual([]);
      expect(explanation.inputs.map((p) => `${p.change} ${p.kind} ${p.path}`), x.stdout).toEqual(['changed file src/words.txt']);

      const shell = await reexec('shell', rebuilt!.action, '--', 'cat', 'src/words.txt');
      expect(shell.exitCode, shell.stderr).toBe(0);
      expect(shell.stdout).toBe(`zebra\napple ${token}\nmango`);
      // The host-tools sandbox, as the worker ran it: the input root as the working tree.
      const pwd = await reexec('shell', rebuilt!.action, '--', 'pwd');
      expect(pwd.stdout).toBe('/tmp/reexec-build');
    },
    TIMEOUT,
  );
});
