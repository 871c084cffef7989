import { existsSync, writeFileSync } from 'node:fs';
import type { Logger } from './logger.js';

/**
 * Pause points: places where a test needs the daemon to stop and wait, to kill it there
 * (a crash at a chosen moment, not at a moment chosen by timing). REEXEC_TEST_PAUSE_AT=NAME
 * makes the process log `test pause point "NAME" reached` and wait forever when it gets there.
 * With REEXEC_TEST_PAUSE_FILE=FILE as well, it waits only while FILE exists, and writes
 * FILE.reached when it gets there: for a process that logs nothing (`reexec gc --data-dir`),
 * and for a test that lets it go on. Only tests set them; without them a pause point costs one
 * comparison.
 */
export async function pausePoint(name: string, log?: Logger): Promise<void> {
  if (process.env.REEXEC_TEST_PAUSE_AT !== name) return;
  const file = process.env.REEXEC_TEST_PAUSE_FILE;
  if (file && !existsSync(file)) return;
  log?.warn(`test pause point "${name}" reached: waiting${file ? ` while ${file} exists` : ' to be killed'}`, { pausePoint: name });
  if (file) {
    writeFileSync(`${file}.reached`, `${process.pid}\n`);
    while (existsSync(file)) await new Promise((r) => setTimeout(r, 20));
    return;
  }
  // A timer keeps the process alive: a pending promise alone would let it exit.
  await new Promise<never>(() => setInterval(() => undefined, 1 << 30));
}
