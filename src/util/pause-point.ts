import { existsSync, writeFileSync } from 'node:fs';

/**
 * A pause point for crash tests, off unless the environment names it: with
 * REEXEC_TEST_PAUSE_<NAME>=FILE, a process reaching the point while FILE exists writes
 * FILE.reached and waits until FILE is gone. A test can so SIGKILL a daemon (or `reexec gc`)
 * exactly there, instead of hoping a timed kill lands in the middle of something.
 */
export async function pausePoint(name: string): Promise<void> {
  const file = process.env[`REEXEC_TEST_PAUSE_${name}`];
  if (!file || !existsSync(file)) return;
  writeFileSync(`${file}.reached`, `${process.pid}\n`);
  while (existsSync(file)) await new Promise((r) => setTimeout(r, 20));
}
