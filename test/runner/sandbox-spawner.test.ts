import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SandboxSpawner } from '../../src/runner/sandbox-spawner.js';
import { waitFor } from '../helpers/wait.js';

/**
 * The helper process that spawns sandboxes for the daemon: what it runs gets exactly the
 * environment and log files it is given, its status stream and exit status come back, and a
 * helper that dies fails the runs it had (instead of leaving them waiting) and is replaced.
 */
describe('SandboxSpawner', () => {
  const dir = mkdtempSync(join(tmpdir(), 'reexec-spawner-'));
  const spawner = new SandboxSpawner();
  afterAll(() => {
    spawner.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs the program with only the given environment, its logs in the given files, and reports its status stream and exit code', async () => {
    let status = '';
    const out = join(dir, 'out');
    const err = join(dir, 'err');
    const run = spawner.spawn(
      { file: '/bin/sh', args: ['-c', 'echo "out $GREETING"; env | sort > "$0.env"; echo "err" >&2; echo \'{"child-pid": 1}\' >&3; exit 3', join(dir, 'x')], env: { GREETING: 'hi' }, stdoutPath: out, stderrPath: err },
      (d) => (status += d),
    );
    expect(await run.pid).toBeGreaterThan(0);
    expect(await run.end).toEqual({ code: 3, signal: null });
    expect(readFileSync(out, 'utf8')).toBe('out hi\n');
    expect(readFileSync(err, 'utf8')).toBe('err\n');
    expect(status).toBe('{"child-pid": 1}\n');
    const env = readFileSync(join(dir, 'x.env'), 'utf8');
    expect(env).toMatch(/^GREETING=hi$/m);
    expect(env).not.toMatch(/^HOME=/m);
  });

  it('reports a program that cannot start as an error', async () => {
    const run = spawner.spawn({ file: join(dir, 'no-such-program'), args: [], env: {}, stdoutPath: join(dir, 'o2'), stderrPath: join(dir, 'e2') }, () => undefined);
    expect(await run.end).toMatchObject({ error: expect.stringMatching(/ENOENT/) });
  });

  it('fails the runs of a helper that dies, and starts a new one for the next run', async () => {
    const run = spawner.spawn({ file: '/bin/sleep', args: ['600'], env: {}, stdoutPath: join(dir, 'o3'), stderrPath: join(dir, 'e3') }, () => undefined);
    const pid = (await run.pid)!;
    const helper = spawner.helperPid!;
    process.kill(helper, 'SIGKILL');
    expect(await run.end).toMatchObject({ error: expect.stringMatching(/sandbox spawner process ended/) });
    // The sleep had no --die-with-parent (a sandbox has): end it here.
    process.kill(pid, 'SIGKILL');
    await waitFor('the dead helper to be forgotten', () => spawner.helperPid === undefined);
    const next = spawner.spawn({ file: '/bin/true', args: [], env: {}, stdoutPath: join(dir, 'o4'), stderrPath: join(dir, 'e4') }, () => undefined);
    expect(await next.end).toEqual({ code: 0, signal: null });
    expect(spawner.helperPid).not.toBe(helper);
  });
});
