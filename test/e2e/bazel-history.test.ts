import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HistoryEntry } from '../../src/history/entry.js';
import { makeBazel7Workspace, type Bazel7Workspace } from '../helpers/bazel7-workspace.js';
import { prepareClientsRoot } from '../helpers/clients-root.js';
import { REEXEC_BIN, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { describeRun, isExecutable } from '../helpers/run-client.js';

/**
 * Bazel 7.7 (Debian testing, in the clients root) with reexec as its remote executor, and
 * the action history: the RequestMetadata Bazel sends (tool, version, invocation, target,
 * mnemonic, configuration), the source file changed between two builds named by `explain`,
 * and that file read in the compile's host-tools sandbox (the clients root as "/", as the
 * daemon's execution.host-tools.root says) with `reexec shell`.
 */
const clients = isExecutable('/usr/bin/bwrap') ? prepareClientsRoot() : { skip: 'install the Debian package bubblewrap (reexec runs actions in bwrap)' };
const skipReason = clients.skip ? `skipped: ${clients.skip}` : '';
if (skipReason) console.warn(`Bazel 7 action history end-to-end test ${skipReason}`);

const TIMEOUT = 10 * 60_000;
const HELLO_C = (extra: string) => `#include <stdio.h>\n#include "greeting.h"\n\n/* ${extra} */\nint main(void) {\n    puts(GREETING);\n    return 0;\n}\n`;

describe.skipIf(!!clients.skip)(`Bazel 7 in the action history${skipReason ? ` (${skipReason})` : ''}`, () => {
  const root = clients.root!;
  let daemon: DaemonProcess | undefined;
  let ws: Bazel7Workspace | undefined;
  const token = randomBytes(8).toString('hex');
  const reexec = (command: string, ...args: string[]) => execa(process.execPath, [REEXEC_BIN, command, '--endpoint', daemon!.address, ...args], { reject: false, timeout: 120_000, env: { CI: '' } });
  const history = async (...args: string[]): Promise<HistoryEntry[]> => {
    const r = await reexec('history', '--json', '--limit', '1000', ...args);
    expect(r.exitCode, r.stderr).toBe(0);
    return r.stdout.trim() ? r.stdout.trim().split('\n').map((l) => JSON.parse(l) as HistoryEntry) : [];
  };
  const build = () => ws!.build(`--remote_executor=grpc://127.0.0.1:${daemon!.port}`, '--remote_default_exec_properties=reexec-sandbox=host-tools', '--jobs=4', '//:hello');

  beforeAll(async () => {
    ws = makeBazel7Workspace(root, 'reexec-bazel7-history-', TIMEOUT - 30_000, { greeting: `hello from bazel ${token}` });
    ws.write('hello.c', HELLO_C('first'));
    const config = join(ws.work, 'reexec.yaml');
    writeFileSync(config, `execution:\n  host-tools:\n    root: ${JSON.stringify(root)}\n`);
    daemon = await startDaemonProcess({ dataDir: join(ws.work, 'server'), args: ['--config', config] });
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
      expect(first.code, describeRun('bazel build //:hello', first)).toBe(0);
      const entries = await history('--tool', 'bazel');
      const ran = entries.filter((e) => e.kind === 'execute' && e.outcome === 'ran');
      expect(ran.map((e) => `${e.request?.targetId} ${e.request?.mnemonic}`).sort(), JSON.stringify(entries, null, 1)).toEqual(['//:greeting Genrule', '//:hello CppCompile', '//:hello CppLink']);
      const compile = ran.find((e) => e.request?.mnemonic === 'CppCompile')!;
      expect(compile.request?.tool).toBe('bazel');
      // (Debian's bootstrapped Bazel has no version to send.)
      expect(compile.request?.invocationId).toMatch(/^[0-9a-f-]{36}$/);
      expect(compile.request?.actionId).toMatch(/^[0-9a-f]{64}$/);
      expect(compile.request?.configurationId).toBeTruthy();
      expect(compile.exitCode).toBe(0);
      // Bazel asks the action cache first: every run has its miss.
      expect(entries.filter((e) => e.kind === 'lookup' && e.outcome === 'miss')).toHaveLength(3);
      expect((await history('--target', '//:hello', '--kind', 'execute')).map((e) => e.request?.mnemonic).sort()).toEqual(['CppCompile', 'CppLink']);
      const table = await reexec('history', '--tool', 'bazel', '--kind', 'execute');
      expect(table.stdout).toMatch(/✓ ran +\S+ +[0-9a-f]{12} +bazel +\/\/:hello · CppCompile · /);
    },
    TIMEOUT,
  );

  it(
    'after one source file changes, `explain` names exactly that file, and `shell` reads it in the sandbox',
    async () => {
      const compiles = async () => (await history('--kind', 'execute')).filter((e) => e.outcome === 'ran' && e.request?.mnemonic === 'CppCompile');
      const before = await compiles();
      ws!.write('hello.c', HELLO_C(`second ${token}`));
      const second = await build();
      expect(second.code, describeRun('bazel build (hello.c changed)', second)).toBe(0);
      const rebuilt = (await compiles()).find((e) => !before.some((b) => b.id === e.id));
      expect(rebuilt).toBeDefined();

      const x = await reexec('explain', rebuilt!.action.slice(0, 12), '--json');
      expect(x.exitCode, x.stderr).toBe(0);
      const explanation = JSON.parse(x.stdout) as { against: string; chosenBy: string; arguments: unknown[]; environment: unknown[]; platform: unknown[]; inputs: Array<{ path: string; change: string; kind: string }> };
      expect(explanation.against, x.stdout).toBe(before[0]!.action);
      expect(explanation.chosenBy).toBe('target');
      expect(explanation.arguments).toEqual([]);
      expect(explanation.environment).toEqual([]);
      expect(explanation.platform).toEqual([]);
      expect(explanation.inputs.map((p) => `${p.change} ${p.kind} ${p.path}`), x.stdout).toEqual(['changed file hello.c']);

      const shell = await reexec('shell', rebuilt!.action, '--', 'cat', 'hello.c');
      expect(shell.exitCode, shell.stderr).toBe(0);
      expect(shell.stdout).toBe(HELLO_C(`second ${token}`).trimEnd());
      // The host-tools sandbox as the worker ran it: the input root as the working tree, the
      // configured host-tools root (the clients root, Debian testing) as "/".
      const where = await reexec('shell', rebuilt!.action, '--', 'sh', '-c', 'pwd; . /etc/os-release; echo $VERSION_CODENAME');
      expect(where.stdout.split('\n')[0]).toBe('/tmp/reexec-build');
      expect(where.stdout.split('\n')[1]).toBe(/^VERSION_CODENAME=(.*)$/m.exec(readFileSync(join(root, 'etc', 'os-release'), 'utf8'))?.[1]);
    },
    TIMEOUT,
  );
});
