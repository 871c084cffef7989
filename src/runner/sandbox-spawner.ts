import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Spawns sandboxes from a small helper process instead of the daemon itself.
 *
 * Why: Node spawns with fork(), which copies the page tables of the whole process, on the main
 * thread. In a daemon holding 150 MiB that takes 3-5 ms per action (and grows with the heap),
 * during which no RPC is served and no other action starts; a no-op action's whole sandbox
 * costs about 6 ms. The helper is a bare Node process (a few dozen MiB, nothing else to do):
 * its fork costs a fraction of that, and happens on another core while the daemon serves.
 *
 * Guarantees are those of a direct spawn: the helper opens the log files, sets the sandbox's
 * user, group and umask, puts it in a process group of its own, and reports its pid, bwrap's
 * JSON status stream as it comes, and how it ended. The helper ignores SIGINT and SIGTERM and
 * exits when the daemon's end of the IPC channel goes (the daemon stopping or dying): the
 * sandboxes, started with bwrap's --die-with-parent, die with it. If the helper dies, the
 * runs it had are reported as failed to set up, and the next run starts a new helper.
 */

/** What the helper is asked to spawn: plain data, as it crosses the IPC channel. */
export interface SpawnRequest {
  file: string;
  args: string[];
  env: Record<string, string>;
  /** Files the child's stdout and stderr go to (created or truncated). */
  stdoutPath: string;
  stderrPath: string;
  uid?: number;
  gid?: number;
  cwd?: string;
}

export type SpawnEnd = { code: number | null; signal: NodeJS.Signals | null } | { error: string };

export interface SpawnedSandbox {
  /** The child's pid (its process group's id too), once spawned; undefined if it did not start. */
  readonly pid: Promise<number | undefined>;
  /** How it ended: its exit status once it and its status stream are closed, or why it could not run. */
  readonly end: Promise<SpawnEnd>;
}

type HelperMessage =
  | { id: number; t: 'pid'; pid: number }
  | { id: number; t: 'status'; data: string }
  | { id: number; t: 'end'; code: number | null; signal: NodeJS.Signals | null }
  | { id: number; t: 'error'; message: string };

/**
 * The helper's program (CommonJS, run with `node -e`, so it needs no file of its own wherever
 * the daemon is loaded from). Kept small: everything it loads is paid for in every fork.
 */
const HELPER_SOURCE = String.raw`
'use strict';
const { spawn } = require('node:child_process');
const { openSync, closeSync } = require('node:fs');
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => undefined);
process.on('SIGHUP', () => undefined);
process.on('disconnect', () => process.exit(0));
const send = (m) => { if (process.connected) process.send(m); };
process.on('message', (r) => {
  let out, err;
  try {
    out = openSync(r.stdoutPath, 'w');
    err = openSync(r.stderrPath, 'w');
    const opts = { env: r.env, stdio: ['ignore', out, err, 'pipe'], detached: true };
    if (r.uid !== undefined) Object.assign(opts, { uid: r.uid, gid: r.gid, cwd: r.cwd });
    const child = spawn(r.file, r.args, opts);
    let ended = false;
    child.once('error', (e) => { if (!ended) { ended = true; send({ id: r.id, t: 'error', message: e.message }); } });
    if (child.pid === undefined) return;
    send({ id: r.id, t: 'pid', pid: child.pid });
    child.stdio[3].on('data', (b) => send({ id: r.id, t: 'status', data: b.toString() }));
    child.once('close', (code, signal) => { if (!ended) { ended = true; send({ id: r.id, t: 'end', code, signal }); } });
  } catch (e) {
    send({ id: r.id, t: 'error', message: e.message });
  } finally {
    if (out !== undefined) closeSync(out);
    if (err !== undefined) closeSync(err);
  }
});
`;

interface Pending {
  helper: ChildProcess;
  onPid(pid: number | undefined): void;
  onStatus(data: string): void;
  onEnd(end: SpawnEnd): void;
}

export class SandboxSpawner {
  private helper?: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  /** Spawn a sandbox; `onStatus` gets its status stream (fd 3) piece by piece. */
  spawn(req: SpawnRequest, onStatus: (data: string) => void): SpawnedSandbox {
    const id = this.nextId++;
    let onPid!: (pid: number | undefined) => void;
    let onEnd!: (end: SpawnEnd) => void;
    const pid = new Promise<number | undefined>((r) => (onPid = r));
    const end = new Promise<SpawnEnd>((r) => (onEnd = r));
    const helper = this.running();
    this.pending.set(id, {
      helper,
      onPid,
      onStatus,
      onEnd: (e) => {
        this.pending.delete(id);
        if (this.pending.size === 0) this.idle(helper);
        onPid(undefined);
        onEnd(e);
      },
    });
    helper.ref();
    (helper.channel as { ref?: () => void } | undefined)?.ref?.();
    helper.send({ id, ...req }, (err: Error | null) => {
      if (err) this.pending.get(id)?.onEnd({ error: `could not reach the sandbox spawner process: ${err.message}` });
    });
    return { pid, end };
  }

  /** The helper's pid while it runs (for tests and diagnostics). */
  get helperPid(): number | undefined {
    return this.helper?.connected ? this.helper.pid : undefined;
  }

  /** Stop the helper (what it still runs dies with it). */
  close(): void {
    this.helper?.disconnect();
    this.helper = undefined;
  }

  private running(): ChildProcess {
    if (this.helper && this.helper.connected) return this.helper;
    const helper = spawn(process.execPath, ['--max-semi-space-size=1', '-e', HELPER_SOURCE], {
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      env: {},
      serialization: 'json',
    });
    helper.on('message', (m: HelperMessage) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      if (m.t === 'pid') p.onPid(m.pid);
      else if (m.t === 'status') p.onStatus(m.data);
      else if (m.t === 'end') p.onEnd({ code: m.code, signal: m.signal });
      else p.onEnd({ error: m.message });
    });
    const gone = (why: string): void => {
      if (this.helper === helper) this.helper = undefined;
      for (const p of [...this.pending.values()]) if (p.helper === helper) p.onEnd({ error: why });
    };
    helper.once('error', (e) => gone(`the sandbox spawner process could not run: ${e.message}`));
    helper.once('exit', (code, signal) => gone(`the sandbox spawner process ended (${signal ?? `exit ${code}`}) while the sandbox ran`));
    this.helper = helper;
    this.idle(helper);
    return helper;
  }

  /** Nothing pending: the helper keeps no daemon (or test) alive. */
  private idle(helper: ChildProcess): void {
    helper.unref();
    (helper.channel as { unref?: () => void } | undefined)?.unref?.();
  }
}
