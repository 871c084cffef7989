import type { Logger } from './logger.js';

/**
 * Pause points: places where a test needs the daemon to stop and wait, to kill it there
 * (a crash at a chosen moment, not at a moment chosen by timing). REEXEC_TEST_PAUSE_AT=NAME
 * makes the daemon log `test pause point "NAME" reached` and wait forever when it gets there.
 * Only tests set it; without it a pause point costs one comparison.
 */
export async function pausePoint(name: string, log: Logger): Promise<void> {
  if (process.env.REEXEC_TEST_PAUSE_AT !== name) return;
  log.warn(`test pause point "${name}" reached: waiting to be killed`, { pausePoint: name });
  // A timer keeps the process alive: a pending promise alone would let it exit.
  await new Promise<never>(() => setInterval(() => undefined, 1 << 30));
}
