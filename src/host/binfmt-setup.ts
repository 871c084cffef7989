import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { BINFMT_DIR } from './host-checks.js';

export interface BinfmtSetupStep {
  command: string;
  ok: boolean;
  output: string;
}

/**
 * Make QEMU user mode usable inside sandboxes (root only): mount binfmt_misc if it is not,
 * then have Debian's binfmt-support register every installed qemu-*-static interpreter with
 * the flags its package declares (qemu-user-static declares F, fix-binary).
 */
export async function setupBinfmt(): Promise<BinfmtSetupStep[]> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new Error('--setup-binfmt needs root: run `sudo reexec init --setup-binfmt`, or the commands the host checks print');
  }
  const steps: BinfmtSetupStep[] = [];
  const run = async (file: string, args: string[]): Promise<boolean> => {
    const r = await execa(file, args, { reject: false, timeout: 60_000, all: true });
    steps.push({ command: [file, ...args].join(' '), ok: r.exitCode === 0, output: (r.all ?? '').trim() });
    return r.exitCode === 0;
  };
  if (!existsSync(join(BINFMT_DIR, 'status'))) {
    if (!(await run('mount', ['-t', 'binfmt_misc', 'binfmt_misc', BINFMT_DIR]))) return steps;
  }
  if (readFileSync(join(BINFMT_DIR, 'status'), 'utf8').trim() !== 'enabled') await run('sh', ['-c', `echo 1 > ${BINFMT_DIR}/status`]);
  await run('update-binfmts', ['--enable']);
  return steps;
}
