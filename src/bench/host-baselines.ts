import { spawn } from 'node:child_process';
import { findExecutable } from '../util/find-executable.js';

/**
 * Baselines of the exec suite that run on this machine, outside any server: the raw sandbox
 * spawn a no-op action cannot beat, and a compiler run without remote execution.
 */

/** `bwrap --unshare-all --ro-bind / / /bin/true`: a sandboxed no-op process with nothing else around it. */
export const BWRAP_BASELINE_ARGS = ['--unshare-all', '--ro-bind', '/', '/', '/bin/true'];

/** Absolute path of a command on PATH, or undefined. */
export const findCommand = (name: string): string | undefined => findExecutable(name);

/** Run a program to its end: its exit code (-1 when killed) and the end of its stderr. */
export function run(file: string, args: string[], cwd?: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stderr }));
  });
}

/** Why the bwrap baseline cannot run here, or undefined when it can. */
export async function bwrapProblem(): Promise<string | undefined> {
  const bwrap = findCommand('bwrap');
  if (!bwrap) return 'bubblewrap (bwrap) is not installed on this machine';
  try {
    const r = await run(bwrap, BWRAP_BASELINE_ARGS);
    return r.code === 0 ? undefined : `\`bwrap ${BWRAP_BASELINE_ARGS.join(' ')}\` exits ${r.code} here: ${r.stderr.trim() || 'no message'}`;
  } catch (err) {
    return `bwrap could not be started: ${(err as Error).message}`;
  }
}
