import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HistoryEntry } from '../../src/history/entry.js';
import { bst2UserConfig, makeBst2Project, runBst2 } from '../helpers/bst2-project.js';
import { makeClientsWork, prepareClientsRoot } from '../helpers/clients-root.js';
import { REEXEC_BIN, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { describeRun, isExecutable, removeTree } from '../helpers/run-client.js';

/**
 * BuildStream 2.8 builds remotely on reexec (through its buildbox-casd), and the action
 * history shows it: the RequestMetadata casd sends, a failing element under --failed with its
 * stderr, the one source file changed between two builds named by `explain`, and that file
 * read in the action's sandbox with `reexec shell`.
 */
const clients = isExecutable('/usr/bin/bwrap') ? prepareClientsRoot() : { skip: 'install the Debian package bubblewrap (reexec runs actions in bwrap)' };
const skipReason = clients.skip ? `skipped: ${clients.skip}` : '';
if (skipReason) console.warn(`BuildStream 2 action history end-to-end test ${skipReason}`);

const TIMEOUT = 5 * 60_000;

describe.skipIf(!!clients.skip)(`BuildStream 2.8 in the action history${skipReason ? ` (${skipReason})` : ''}`, () => {
  const root = clients.root!;
  let daemon: DaemonProcess | undefined;
  let work: string;
  let inside: string;
  const token = randomBytes(8).toString('hex');
  const bst = (...args: string[]) => runBst2(root, inside, 'buildstream.conf', args, TIMEOUT - 10_000);
  const reexec = (command: string, ...args: string[]) => execa(process.execPath, [REEXEC_BIN, command, '--endpoint', daemon!.address, ...args], { reject: false, timeout: 120_000, env: { CI: '' } });
  const history = async (...args: string[]): Promise<HistoryEntry[]> => {
    const r = await reexec('history', '--json', '--limit', '1000', ...args);
    expect(r.exitCode, r.stderr).toBe(0);
    return r.stdout.trim() ? r.stdout.trim().split('\n').map((l) => JSON.parse(l) as HistoryEntry) : [];
  };
  const project = () => join(work, 'project');
  const writeSource = (text: string) => writeFileSync(join(project(), 'files', 'src', 'greeting.txt'), text);

  beforeAll(async () => {
    ({ work, inside } = makeClientsWork(root, 'reexec-bst2-history-'));
    daemon = await startDaemonProcess({ dataDir: join(work, 'server') });
    const url = `http://127.0.0.1:${daemon.port}`;
    makeBst2Project(root, project(), 'reexec-history');
    mkdirSync(join(project(), 'files', 'src'), { recursive: true });
    writeSource(`hello ${token}, first\n`);
    writeFileSync(join(project(), 'files', 'src', 'other.txt'), 'unchanged\n');
    writeFileSync(
      join(project(), 'elements', 'greet.bst'),
      ['kind: manual', 'build-depends:', '- base.bst', 'sources:', '- kind: local', '  path: files/src', 'config:', '  install-commands:', '  - mkdir -p %{install-root}/share', '  - cp greeting.txt other.txt %{install-root}/share/', ''].join('\n'),
    );
    writeFileSync(
      join(project(), 'elements', 'broken.bst'),
      ['kind: manual', 'build-depends:', '- base.bst', 'config:', '  install-commands:', `  - 'echo "broken ${token}: no such header" >&2'`, '  - exit 3', ''].join('\n'),
    );
    const server = `{url: "${url}", push: true}`;
    writeFileSync(join(work, 'buildstream.conf'), bst2UserConfig(inside, { artifacts: server, remoteExecution: { service: `{url: "${url}"}`, actionCache: server } }));
  });

  afterAll(async () => {
    await daemon?.stop();
    if (work) removeTree(work);
  });

  it(
    "records BuildStream's actions with the RequestMetadata its buildbox-casd sends",
    async () => {
      const build = await bst('build', 'greet.bst');
      expect(build.code, describeRun('bst build greet.bst', build)).toBe(0);
      const entries = await history();
      const ran = entries.filter((e) => e.kind === 'execute' && e.outcome === 'ran');
      expect(ran.length, JSON.stringify(entries, null, 1)).toBeGreaterThanOrEqual(1);
      const greet = ran[0]!;
      expect(greet.exitCode).toBe(0);
      // BuildStream names no tool of its own: its buildbox-casd says it forwards the calls.
      expect(greet.request).toEqual({ tool: '(via buildbox-casd)' });
      const lookups = entries.filter((e) => e.kind === 'lookup' && e.action === greet.action);
      expect(lookups.map((e) => `${e.outcome} ${e.request?.tool}`)).toEqual(['miss (via buildbox-casd)']);
      expect(await history('--tool', 'bst')).toEqual(entries);
      expect(await history('--tool', 'bazel')).toEqual([]);
    },
    TIMEOUT,
  );

  it(
    'a failing element shows up under --failed, and `show` prints its stderr',
    async () => {
      const build = await bst('build', 'broken.bst');
      expect(build.code, describeRun('bst build broken.bst', build)).not.toBe(0);
      const failed = await history('--failed');
      expect(failed, JSON.stringify(failed, null, 1)).toHaveLength(1);
      expect(failed[0]).toMatchObject({ kind: 'execute', failed: true });
      expect(failed[0]!.exitCode).not.toBe(0);
      const show = await reexec('show', failed[0]!.action.slice(0, 16));
      expect(show.exitCode, show.stderr).toBe(0);
      expect(show.stdout).toMatch(/^result +✗ exit \d+/m);
      expect(show.stdout).toMatch(/^stderr \(.*\):$/m);
      expect(show.stdout).toContain(`broken ${token}: no such header`);
      const all = await reexec('show', failed[0]!.action, '--stderr');
      expect(all.stdout).toContain(`broken ${token}: no such header`);
    },
    TIMEOUT,
  );

  it(
    'after one source file changes, `explain` names exactly that file, and `shell` reads it in the sandbox',
    async () => {
      const before = (await history()).filter((e) => e.kind === 'execute' && e.outcome === 'ran' && !e.failed);
      writeSource(`hello ${token}, second\n`);
      const build = await bst('build', 'greet.bst');
      expect(build.code, describeRun('bst build greet.bst (changed source)', build)).toBe(0);
      const after = (await history()).filter((e) => e.kind === 'execute' && e.outcome === 'ran' && !e.failed);
      const rebuilt = after.find((e) => !before.some((b) => b.id === e.id));
      expect(rebuilt, JSON.stringify(after, null, 1)).toBeDefined();

      const x = await reexec('explain', rebuilt!.action, '--json');
      expect(x.exitCode, x.stderr).toBe(0);
      const explanation = JSON.parse(x.stdout) as { against: string; arguments: unknown[]; environment: unknown[]; inputs: Array<{ path: string; change: string; kind: string; before: string; after: string }> };
      expect(explanation.against, x.stdout).toBe(before[0]!.action);
      expect(explanation.arguments).toEqual([]);
      expect(explanation.environment).toEqual([]);
      expect(explanation.inputs, x.stdout).toHaveLength(1);
      const changed = explanation.inputs[0]!;
      expect(changed).toMatchObject({ change: 'changed', kind: 'file' });
      expect(changed.path).toMatch(/(^|\/)greeting\.txt$/);
      expect(changed.before).not.toBe(changed.after);
      const text = await reexec('explain', rebuilt!.action);
      expect(text.stdout).toMatch(new RegExp(`^input files:\\n {2}~ ${changed.path.replace(/[.]/g, '\\.')} {2}\\(file, content: `, 'm'));

      const shell = await reexec('shell', rebuilt!.action, '--', 'cat', `/${changed.path}`);
      expect(shell.exitCode, shell.stderr).toBe(0);
      expect(shell.stdout).toBe(`hello ${token}, second`);
    },
    TIMEOUT,
  );
});
