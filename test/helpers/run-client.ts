import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, closeSync, openSync, readSync, rmSync } from 'node:fs';

export interface ClientRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** stdout and stderr interleaved as they arrived. */
  output: string;
  durationMs: number;
}

/**
 * Runs a real client (bst, bazel…) to completion and never throws on a failed exit: the test
 * asserts on the result and prints `output` when it does not match. Killed after timeoutMs.
 */
export function runClient(
  command: string,
  args: readonly string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number },
): Promise<ClientRun> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (output += c.toString('utf8')));
    const timer = setTimeout(() => {
      output += `\n[test: killed after ${opts.timeoutMs} ms]\n`;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 300_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output, durationMs: Date.now() - started });
    });
  });
}

/** A readable summary for assertion messages: the command line and the tail of its output. */
export function describeRun(what: string, run: ClientRun, tailLines = 80): string {
  const lines = run.output.trimEnd().split('\n');
  return `${what} exited with ${run.signal ?? run.code} after ${run.durationMs} ms; last ${Math.min(tailLines, lines.length)} lines:\n${lines.slice(-tailLines).join('\n')}`;
}

export function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** True for an ELF executable without a program interpreter (statically linked). */
export function isStaticElf(path: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const h = Buffer.alloc(64);
    if (readSync(fd, h, 0, 64, 0) < 64 || h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2 || h[5] !== 1) return false; // ELF64 LE
    const phoff = Number(h.readBigUInt64LE(0x20));
    const phentsize = h.readUInt16LE(0x36);
    const phnum = h.readUInt16LE(0x38);
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3 /* PT_INTERP */) return false;
    return true;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** rm -rf that also copes with the read-only trees Bazel leaves behind when not root. */
export function removeTree(path: string): void {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch {
    spawnSync('chmod', ['-R', 'u+w', path], { stdio: 'ignore' });
    rmSync(path, { recursive: true, force: true });
  }
}
