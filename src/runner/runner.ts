import type { HostMount } from './host-tools-view.js';

/**
 * What runs an action's command, and what it is asked: plain data, nothing of the scheduler
 * or the stager. BubblewrapRunner is the implementation; tests use fakes.
 */

/** The file system the command sees: a staged host directory and what is mounted over it. */
export interface SandboxRoot {
  /** Host directory that becomes "/" (rootfs) or the working tree (host-tools). */
  dir: string;
  /** The root itself is read-only. */
  readOnly: boolean;
  /** Mounts over the root, sandbox paths relative to it ("/usr"). */
  mounts: ReadonlyArray<{ kind: 'ro-bind' | 'bind'; source: string; dest: string }>;
  /** The root has a writable /tmp of its own (else the runner mounts a tmpfs there). */
  tmpWritable: boolean;
}

/** How the command is isolated. */
export interface SandboxPolicy {
  /** rootfs: the root is "/" (BuildStream); host-tools: the host's file system read-only, the root at HOST_TOOLS_ROOT. */
  kind: 'rootfs' | 'host-tools';
  uid: number;
  gid: number;
  network: boolean;
  /** Canonical ISAs the action asks for (x86-32 alone on x86-64 runs under the linux32 personality). */
  isas: readonly string[];
}

export interface RunRequest {
  argv: string[];
  /** Exactly the Command's environment, in its order; nothing of the server's leaks in. */
  env: Array<[string, string]>;
  /** Relative to the input root. */
  workingDirectory: string;
  root: SandboxRoot;
  policy: SandboxPolicy;
  stdoutPath: string;
  stderrPath: string;
  timeoutMs: number;
  signal?: AbortSignal;
  /**
   * Host-tools sandbox: what covers the read-only root besides the /tmp that holds the input
   * root (see HostToolsView), as paths inside the sandbox.
   */
  hostMounts?: HostMount[];
  /**
   * The host directory the host-tools sandbox shows read-only as "/" (a toolchain root whose
   * compilers match the clients'); default the host's own "/". hostMounts' ro-bind paths are
   * bound from inside it.
   */
  hostToolsRoot?: string;
  /** Host files bound in last, each at an absolute path inside the sandbox (an action's REAPI socket). */
  binds?: Array<{ source: string; dest: string }>;
  /** Run the sandbox as this user (a daemon run as root never runs actions as root); undefined: the daemon's own. */
  runAs?: { uid: number; gid: number };
  /** A person's terminal is attached (`reexec shell`): the sandbox stays in the terminal's session. */
  interactive?: boolean;
}

export interface RunResult {
  exitCode: number;
  timedOut: boolean;
  cancelled: boolean;
  /** The sandbox could not be set up: what failed, and how to fix it. */
  setupError?: string;
  startedAt: Date;
  completedAt: Date;
}

export interface Runner {
  run(req: RunRequest): Promise<RunResult>;
}
