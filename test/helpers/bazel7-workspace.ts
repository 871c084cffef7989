import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeClientsWork, runInRoot } from './clients-root.js';
import type { ClientRun } from './run-client.js';
import { removeTree } from './run-client.js';

export interface Bazel7Workspace {
  /** Host path of the test's folder (inside the clients root). */
  work: string;
  /** The same folder as commands in the clients root see it. */
  inside: string;
  /** The workspace, as the clients root sees it (inside + '/ws'); its host path is work + '/ws'. */
  workspaceInside: string;
  /** Writes a file of the workspace (path relative to it), creating its folders. */
  write(rel: string, text: string): void;
  /** Runs `bazel ARGS` in the workspace, inside the clients root, with its own output root and HOME. */
  bazel(...args: string[]): Promise<ClientRun>;
  /** `bazel build` with the flags every test wants, then `args` (remote flags, targets). */
  build(...args: string[]): Promise<ClientRun>;
  /** Stops the Bazel server (it would outlive the test); never fails. */
  shutdown(): Promise<void>;
  remove(): void;
}

/**
 * Files of an offline Bzlmod workspace for Debian testing's Bazel 7: Debian's
 * /etc/bazel/bazelrc maps rules_cc, bazel_skylib, platforms, rules_java… to /usr/share/bazel;
 * the modules @bazel_tools asks for beyond those are empty local mocks, so nothing is
 * downloaded. A genrule writes a header that a cc_binary includes.
 */
const MOCKED_MODULES = ['apple_support', 'buildozer', 'protobuf', 'zlib'];
/** The workspace's BUILD file: a genrule writes greeting.h, which the cc_binary includes. */
const buildFile = (greeting: string): string =>
  [
    'load("@rules_cc//cc:defs.bzl", "cc_binary")',
    '',
    'genrule(',
    '    name = "greeting",',
    '    outs = ["greeting.h"],',
    `    cmd = "echo '#define GREETING \\"${greeting}\\"' > $@",`,
    ')',
    '',
    'cc_binary(',
    '    name = "hello",',
    '    srcs = ["hello.c", ":greeting"],',
    ')',
    '',
  ].join('\n');

const BASE_FILES: Record<string, string> = {
  'MODULE.bazel': 'module(name = "hello")\n\nbazel_dep(name = "rules_cc")\nbazel_dep(name = "bazel_skylib")\n',
  '.bazelrc': [
    'common --noenable_workspace',
    'common --lockfile_mode=off',
    'common --repository_cache=',
    ...MOCKED_MODULES.map((m) => `common --override_module=${m}=%workspace%/third_party/mock/${m}`),
    // Debian's /etc/bazel/bazelrc turns on sandbox debugging, which floods the output.
    'build --nosandbox_debug',
    '',
  ].join('\n'),
  'hello.c': '#include <stdio.h>\n#include "greeting.h"\n\nint main(void) {\n    puts(GREETING);\n    return 0;\n}\n',
  ...Object.fromEntries(MOCKED_MODULES.flatMap((m) => [[`third_party/mock/${m}/MODULE.bazel`, `module(name = "${m}")\n`], [`third_party/mock/${m}/BUILD`, '']])),
};

/**
 * A Bazel 7 workspace in a fresh folder of the clients root (Debian testing's bazel-bootstrap),
 * with a genrule and a cc_binary (`//:greeting`, `//:hello`, which prints `greeting`, by
 * default "hello from bazel"); tests add targets with write().
 */
export function makeBazel7Workspace(root: string, prefix: string, timeoutMs: number, opts: { greeting?: string } = {}): Bazel7Workspace {
  const { work, inside } = makeClientsWork(root, prefix);
  const ws = join(work, 'ws');
  const write = (rel: string, text: string): void => {
    mkdirSync(join(ws, rel, '..'), { recursive: true });
    writeFileSync(join(ws, rel), text);
  };
  for (const [rel, text] of Object.entries(BASE_FILES)) write(rel, text);
  write('BUILD.bazel', buildFile(opts.greeting ?? 'hello from bazel'));
  const workspaceInside = `${inside}/ws`;
  const bazel = (...args: string[]): Promise<ClientRun> =>
    runInRoot(root, ['bazel', `--output_user_root=${inside}/output-root`, ...args], {
      cwd: workspaceInside,
      env: { HOME: `${inside}/home`, TMPDIR: `${inside}/tmp` },
      timeoutMs,
    });
  return {
    work,
    inside,
    workspaceInside,
    write,
    bazel,
    build: (...args) => bazel('build', '--color=no', '--curses=no', '--remote_timeout=120', ...args),
    shutdown: async () => {
      await bazel('shutdown').catch(() => undefined);
    },
    remove: () => removeTree(work),
  };
}
