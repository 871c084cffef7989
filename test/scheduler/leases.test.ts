import { afterEach, describe, expect, it } from 'vitest';
import { Digest } from '../../src/digest/digest.js';
import { InstanceName } from '../../src/digest/instance-name.js';
import type { Job } from '../../src/scheduler/operation.js';
import { offeredProperties, offersAll, parsePlatform } from '../../src/scheduler/platform.js';
import { BOTS_POOL, Scheduler, type Worker } from '../../src/scheduler/scheduler.js';
import { ManualClock } from '../../src/util/clock.js';

const GPU = new Map([['pool', new Set(['gpu'])], ['OSFamily', new Set(['linux'])]]);

function job(name: string, props: Array<[string, string]> = [['ISA', 'x86-64']], offered = (n: string, v: string) => offersAll(GPU, [{ name: n, value: v }])): Job {
  return {
    instance: InstanceName.parse(''),
    actionDigest: Digest.compute(Buffer.from(name)),
    action: {},
    command: { arguments: [name] },
    platform: parsePlatform({ properties: props.map(([n, v]) => ({ name: n, value: v })) }, 'x86-64', offered),
    priority: 0,
    doNotCache: false,
    timeoutMs: 1000,
  };
}

const bot = (s: Scheduler, id: string, props: Array<[string, string]>): Worker => {
  const offer = offeredProperties(props.map(([name, value]) => ({ name, value })));
  s.remoteConnected(id, offer);
  return { name: `bot ${id}`, accepts: (j) => offersAll(offer, j.platform.raw) };
};

const ok = { status: { code: 0, message: '' }, result: { exitCode: 0 } };

describe('Scheduler leases', () => {
  let s: Scheduler;
  let clock: ManualClock;
  const make = (pools = [{ name: 'native', isas: ['x86-64'], slots: 1 }], maxAttempts = 3): Scheduler => {
    clock = new ManualClock(1_000_000);
    s = new Scheduler(pools, { clock, maxAttempts, remoteGraceMs: 60_000 });
    return s;
  };
  afterEach(() => s?.close());

  it('gives a worker only what it offers: bot-only properties go to the bot, the rest to whoever asks first', async () => {
    make();
    const gpuBot = bot(s, 'g', [['OSFamily', 'linux'], ['pool', 'gpu']]);
    const gpuOp = s.submit(job('gpu', [['OSFamily', 'linux'], ['pool', 'gpu']]));
    const plainOp = s.submit(job('plain'));
    expect(gpuOp.pool).toBe(BOTS_POOL);
    expect(plainOp.pool).toBe('native');
    const local = await s.lease(s.localWorker(s.pools[0]!));
    expect(local.execution).toBe(plainOp.execution);
    const remote = s.tryLease(gpuBot, clock.now() + 5000)!;
    expect(remote.execution).toBe(gpuOp.execution);
    expect(remote.worker).toBe('bot g');
    expect(s.completeLease(remote.id, ok)).toBe(true);
    expect(gpuOp.stage).toBe('COMPLETED');
  });

  it('refuses at once what no worker offers; a bot-only property stays valid for the grace time after its bot left', () => {
    make([]);
    expect(() => s.submit(job('x'))).toThrow(/no local worker pools.*no bot is connected/);
    bot(s, 'g', [['OSFamily', 'linux'], ['pool', 'gpu']]);
    expect(() => s.submit(job('y', [['OSFamily', 'linux'], ['pool', 'tpu']], () => true))).toThrow(/pool="tpu".*no connected bot offers/);
    s.remoteGone('g');
    clock.advance(59_000);
    expect(s.offeredByRemote('pool', 'gpu')).toBe(true);
    expect(s.submit(job('z', [['OSFamily', 'linux'], ['pool', 'gpu']])).stage).toBe('QUEUED');
    clock.advance(2_000);
    expect(s.offeredByRemote('pool', 'gpu')).toBe(false);
    expect(() => s.submit(job('w', [['OSFamily', 'linux'], ['pool', 'gpu']], () => true))).toThrow(/FAILED|no connected bot/);
  });

  it('a lease past its deadline runs elsewhere; a late report of the lost lease is ignored', async () => {
    make([]);
    const a = bot(s, 'a', [['ISA', 'x86-64']]);
    const b = bot(s, 'b', [['ISA', 'x86-64']]);
    const op = s.submit(job('x'));
    const first = s.tryLease(a, clock.now() + 5000)!;
    expect(s.renew(first.id, clock.now() + 10_000)).toBe(true);
    clock.advance(9_000);
    s.expireLeases();
    expect(op.stage).toBe('EXECUTING');
    clock.advance(2_000);
    s.expireLeases();
    expect(first.signal.aborted).toBe(true);
    expect(op.stage).toBe('QUEUED');
    const second = s.tryLease(b, clock.now() + 5000)!;
    expect(second.execution).toBe(op.execution);
    expect(op.execution.attempts).toBe(2);
    expect(s.completeLease(first.id, { status: { code: 0 }, result: { exitCode: 1 } })).toBe(false);
    expect(s.completeLease(second.id, ok)).toBe(true);
    expect(op.response).toBe(ok);
  });

  it('fails an action UNAVAILABLE after maxAttempts lost leases, saying why', () => {
    make([], 2);
    const a = bot(s, 'a', [['ISA', 'x86-64']]);
    const op = s.submit(job('x'));
    s.fail(s.tryLease(a)!.id, 'worker a went away');
    expect(op.stage).toBe('QUEUED');
    s.fail(s.tryLease(a)!.id, 'worker a went away again');
    expect(op.stage).toBe('COMPLETED');
    expect(op.response?.status?.code).toBe(14);
    expect(op.response?.status?.message).toMatch(/2 times.*went away again/);
  });

  it('release() puts a lease back without counting the attempt', () => {
    make([], 1);
    const a = bot(s, 'a', [['ISA', 'x86-64']]);
    const op = s.submit(job('x'));
    s.release(s.tryLease(a)!.id);
    expect(op.stage).toBe('QUEUED');
    expect(op.execution.attempts).toBe(0);
    expect(s.tryLease(a)!.execution).toBe(op.execution);
  });

  it('cancel reaches the lease holder through its signal', async () => {
    make();
    const op = s.submit(job('x'));
    const lease = await s.lease(s.localWorker(s.pools[0]!));
    s.cancel(op.name);
    expect(lease.signal.aborted).toBe(true);
    s.fail(lease.id, 'stopped');
    expect(op.response?.status?.code).toBe(1);
  });

  it('a shutdown leaves a leased execution unfinished (it runs again after the restart), not cancelled', () => {
    make([]);
    const a = bot(s, 'a', [['ISA', 'x86-64']]);
    const op = s.submit(job('x'));
    const lease = s.tryLease(a)!;
    s.close();
    expect(lease.signal.aborted).toBe(true);
    s.fail(lease.id, 'the server is shutting down');
    expect(op.stage).toBe('EXECUTING');
  });

  it('a waiting worker is handed the first queued execution it can run', async () => {
    make([]);
    const gpu = bot(s, 'g', [['OSFamily', 'linux'], ['pool', 'gpu']]);
    const waiting = s.lease(gpu);
    s.remoteConnected('x', offeredProperties([{ name: 'ISA', value: 'x86-64' }]));
    s.submit(job('plain'));
    const gpuOp = s.submit(job('gpu', [['OSFamily', 'linux'], ['pool', 'gpu']]));
    expect((await waiting).execution).toBe(gpuOp.execution);
    expect(s.queued().map((e) => e.job.command.arguments![0])).toEqual(['plain']);
  });
});
