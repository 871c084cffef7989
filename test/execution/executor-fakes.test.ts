import { describe, expect, it } from 'vitest';
import type { ActionCache } from '../../src/ac/action-cache.js';
import { CachingExecutor, type Executor } from '../../src/execution/build-executor.js';
import { Digest } from '../../src/digest/digest.js';
import { InstanceName } from '../../src/digest/instance-name.js';
import type { re } from '../../src/proto.js';
import type { Execution, Job } from '../../src/scheduler/operation.js';
import { parsePlatform } from '../../src/scheduler/platform.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { silentLogger } from '../../src/util/logger.js';
import { WorkerPool } from '../../src/worker/worker-pool.js';

function job(name: string, doNotCache = false): Job {
  return {
    instance: InstanceName.parse(''),
    actionDigest: Digest.compute(Buffer.from(name)),
    action: {},
    command: { arguments: [name] },
    platform: parsePlatform(undefined, 'x86-64'),
    priority: 0,
    doNotCache,
    timeoutMs: 1000,
  };
}

class Cache implements ActionCache {
  readonly puts: string[] = [];
  failWith?: Error;
  async get(): Promise<undefined> {
    return undefined;
  }
  async put(_i: InstanceName, d: Digest): Promise<void> {
    if (this.failWith) throw this.failWith;
    this.puts.push(d.hash);
  }
  async delete(): Promise<void> {}
}

/** An executor that answers from a table, or waits for its signal. */
class FakeExecutor implements Executor {
  readonly ran: string[] = [];
  constructor(private readonly answers: Record<string, re.IExecuteResponse | 'wait'>) {}
  async execute(ex: Execution, _w: string, signal: AbortSignal): Promise<re.IExecuteResponse> {
    const name = ex.job.command.arguments![0]!;
    this.ran.push(name);
    const a = this.answers[name]!;
    if (a !== 'wait') return a;
    await new Promise((r) => signal.addEventListener('abort', r, { once: true }));
    return { status: { code: 1, message: 'cancelled' } };
  }
}

describe('CachingExecutor and local slots over the lease queue (fakes, no sandbox)', () => {
  const ok = (exitCode: number): re.IExecuteResponse => ({ status: { code: 0, message: '' }, result: { exitCode } });

  it('caches successes only, and turns a failed cache write into the response status', async () => {
    const ac = new Cache();
    const inner = new FakeExecutor({ good: ok(0), bad: ok(2), nocache: ok(0), err: { status: { code: 4, message: 'timeout' }, result: { exitCode: 0 } } });
    const ex = new CachingExecutor(inner, ac, silentLogger);
    const run = (j: Job) => ex.execute({ id: 'x', job: j } as Execution, 'w', new AbortController().signal);
    await run(job('good'));
    await run(job('bad'));
    await run(job('nocache', true));
    await run(job('err'));
    expect(ac.puts).toEqual([job('good').actionDigest.hash]);
    ac.failWith = new Error('disk full');
    expect((await run(job('good'))).status?.message).toContain('disk full');
  });

  it('local slots take leases, report completions, and stop on cancel', async () => {
    const s = new Scheduler([{ name: 'native', isas: ['x86-64'], slots: 2 }], {});
    const exec = new FakeExecutor({ a: ok(0), slow: 'wait' });
    const pool = new WorkerPool(s, exec, silentLogger);
    pool.start(s.pools);
    const a = s.submit(job('a'));
    const slow = s.submit(job('slow'));
    await new Promise<void>((resolve) => s.on('change', () => a.stage === 'COMPLETED' && slow.stage === 'EXECUTING' && resolve()));
    expect(a.response?.result?.exitCode).toBe(0);
    expect(slow.execution.worker).toMatch(/^native-/);
    const done = new Promise<void>((resolve) => s.on('change', (op) => op === slow && op.stage === 'COMPLETED' && resolve()));
    s.cancel(slow.name);
    await done;
    expect(slow.response?.status?.code).toBe(1);
    expect(s.heldLeases()).toEqual([]);
    s.close();
    await pool.close();
  });
});
