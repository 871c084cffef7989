import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isExecutable, removeTree, runClient, type ClientRun } from './run-client.js';

/** Debian 12's Bazel 4.2 (the package bazel-bootstrap). */
export const BAZEL = '/usr/bin/bazel';
export const bazelSkipReason = isExecutable(BAZEL) ? '' : 'skipped: install the Debian package bazel-bootstrap (for /usr/bin/bazel)';

export interface BazelWorkspace {
  /** The temporary folder holding everything below (and the rest of the test's files). */
  tmp: string;
  /** The workspace: tmp/ws, with an empty WORKSPACE file. */
  workspace: string;
  /** Runs `bazel ARGS` in the workspace, with its own output root, no ~/.bazelrc and its own HOME. */
  bazel(...args: string[]): Promise<ClientRun>;
  /** `bazel build` with the flags every test wants, then `args` (remote flags, targets). */
  build(...args: string[]): Promise<ClientRun>;
  /** Stops the Bazel server (it would outlive the test run); never fails. */
  shutdown(): Promise<void>;
  /** Removes tmp, Bazel's read-only trees included. */
  remove(): void;
}

/**
 * A fresh temporary folder (`prefix` + random) with a Bazel workspace in it, for Bazel 4.2
 * with reexec as its remote cache or executor. Bazel's runs are killed after timeoutMs.
 */
export function makeBazelWorkspace(prefix: string, timeoutMs: number): BazelWorkspace {
  const tmp = mkdtempSync(join(tmpdir(), prefix));
  const workspace = join(tmp, 'ws');
  const outputRoot = join(tmp, 'output-root');
  mkdirSync(workspace);
  mkdirSync(join(tmp, 'home'));
  writeFileSync(join(workspace, 'WORKSPACE'), '');

  const bazel = (...args: string[]) =>
    runClient(BAZEL, [`--output_user_root=${outputRoot}`, '--nohome_rc', ...args], {
      cwd: workspace,
      env: { ...process.env, HOME: join(tmp, 'home'), LANG: 'C.UTF-8' },
      timeoutMs,
    });
  const build = (...args: string[]) =>
    bazel(
      'build',
      '--remote_timeout=120',
      // Debian's /etc/bazel/bazelrc turns on sandbox debugging, which floods the output.
      '--nosandbox_debug',
      '--color=no',
      '--curses=no',
      ...args,
    );
  return {
    tmp,
    workspace,
    bazel,
    build,
    shutdown: async () => {
      await bazel('shutdown').catch(() => undefined);
    },
    remove: () => removeTree(tmp),
  };
}

/**
 * reexec on `port` as Bazel 4.2 must be told it: always with the scheme, since a bare
 * host:port means TLS, which Debian's Bazel 4.2 cannot do.
 */
export const grpcEndpoint = (port: number): string => `grpc://127.0.0.1:${port}`;
