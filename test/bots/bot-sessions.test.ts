import { afterEach, describe, expect, it } from 'vitest';
import type { ActionCache } from '../../src/ac/action-cache.js';
import { BotSessions } from '../../src/bots/bot-sessions.js';
import { Digest } from '../../src/digest/digest.js';
import { InstanceName } from '../../src/digest/instance-name.js';
import { packAny, re, rw } from '../../src/proto.js';
import type { Job } from '../../src/scheduler/operation.js';
import { parsePlatform } from '../../src/scheduler/platform.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { ManualClock } from '../../src/util/clock.js';
import { silentLogger } from '../../src/util/logger.js';

const { LeaseState } = rw;

function job(name: string, doNotCache = false): Job {
  return {
    instance: InstanceName.parse(''),
    actionDigest: Digest.compute(Buffer.from(name)),
    action: {},
    command: { arguments: [name] },
    platform: parsePlatform({ properties: [{ name: 'OSFamily', value: 'linux' }, { name: 'ISA', value: 'x86-64' }] }, 'x86-64'),
    priority: 0,
    doNotCache,
    timeoutMs: 1000,
  };
}

class MemoryActionCache implements ActionCache {
  readonly puts: string[] = [];
  async get(): Promise<undefined> {
    return undefined;
  }
  async put(_i: InstanceName, d: Digest): Promise<void> {
    this.puts.push(d.hash);
  }
  async delete(): Promise<void> {}
}

const worker = { devices: [{ handle: 'h', properties: [{ key: 'OSFamily', value: 'linux' }, { key: 'ISA', value: 'x86-64' }] }] };
const result = (exitCode: number) => packAny('build.bazel.remote.execution.v2.ActionResult', re.ActionResult.encode({ exitCode, stdoutRaw: Buffer.from('x') }).finish());

describe('BotSessions', () => {
  let s: Scheduler;
  let bots: BotSessions;
  let clock: ManualClock;
  let ac: MemoryActionCache;
  const make = (): void => {
    clock = new ManualClock(1_000_000);
    s = new Scheduler([], { clock, maxAttempts: 3 });
    ac = new MemoryActionCache();
    bots = new BotSessions(s, ac, silentLogger, { sessionTimeoutMs: 10_000, maxPollMs: 0 }, clock);
  };
  afterEach(() => {
    bots?.stop();
    s?.close();
  });

  it('leases PENDING with the Action digest, then ACTIVE, then COMPLETED into the response and the cache', async () => {
    make();
    const session = bots.create('', { botId: 'b1', worker }, 'ipv4:10.0.0.2:1234');
    expect(session.name).toMatch(/^botSessions\//);
    const op = s.submit(job('a'));
    const got = await bots.update(session.name!, { botId: 'b1', status: rw.BotStatus.OK }, Number.POSITIVE_INFINITY);
    const lease = got.leases![0]!;
    expect(lease.state).toBe(LeaseState.PENDING);
    expect(lease.payload?.type_url).toBe('type.googleapis.com/build.bazel.remote.execution.v2.Digest');
    expect(Digest.fromProto(re.Digest.decode(lease.payload!.value!)).equals(op.job.actionDigest)).toBe(true);
    expect(op.stage).toBe('EXECUTING');

    const active = await bots.update(session.name!, { botId: 'b1', leases: [{ id: lease.id, state: LeaseState.ACTIVE }] }, Number.POSITIVE_INFINITY);
    expect(active.leases![0]!.state).toBe(LeaseState.ACTIVE);
    expect(bots.list()[0]!.lease?.state).toBe('ACTIVE');

    const done = await bots.update(session.name!, { botId: 'b1', leases: [{ id: lease.id, state: LeaseState.COMPLETED, status: { code: 0 }, result: result(0) }] }, Number.POSITIVE_INFINITY);
    expect(done.leases).toEqual([]);
    expect(op.stage).toBe('COMPLETED');
    expect(op.response?.result?.exitCode).toBe(0);
    expect(op.response?.result?.executionMetadata?.worker).toBe('b1');
    expect(ac.puts).toEqual([op.job.actionDigest.hash]);
    // buildbox-worker repeats its last completion when it stops: accepted and dropped.
    await bots.update(session.name!, { botId: 'b1', leases: [{ id: lease.id, state: LeaseState.COMPLETED, status: { code: 0 }, result: result(0) }] }, Number.POSITIVE_INFINITY);
    expect(bots.list()[0]!.leasesCompleted).toBe(1);
  });

  it('does not cache a failed action, and reports a lease the bot could not run with its status', async () => {
    make();
    const name = bots.create('', { botId: 'b1', worker }, 'p').name!;
    const failing = s.submit(job('fails'));
    let id = (await bots.update(name, {}, Infinity)).leases![0]!.id;
    await bots.update(name, { leases: [{ id, state: LeaseState.COMPLETED, status: { code: 0 }, result: result(3) }] }, Infinity);
    expect(failing.response?.result?.exitCode).toBe(3);
    const broken = s.submit(job('broken'));
    id = (await bots.update(name, {}, Infinity)).leases![0]!.id;
    await bots.update(name, { leases: [{ id, state: LeaseState.COMPLETED, status: { code: 9, message: 'input root missing' } }] }, Infinity);
    expect(broken.response?.status).toMatchObject({ code: 9, message: 'input root missing' });
    expect(ac.puts).toEqual([]);
  });

  it('a new session of the same bot ends the old one and requeues its lease', async () => {
    make();
    const old = bots.create('', { botId: 'b1', worker }, 'p').name!;
    const op = s.submit(job('a'));
    await bots.update(old, {}, Infinity);
    expect(op.stage).toBe('EXECUTING');
    const fresh = bots.create('', { botId: 'b1', worker }, 'p').name!;
    expect(op.stage).toBe('QUEUED');
    await expect(bots.update(old, {}, Infinity)).rejects.toThrow(/does not exist/);
    const again = await bots.update(fresh, {}, Infinity);
    expect(again.leases![0]!.state).toBe(LeaseState.PENDING);
    expect(op.execution.attempts).toBe(2);
  });

  it('a bot that stops calling loses its session, and its lease runs elsewhere', async () => {
    make();
    const a = bots.create('', { botId: 'a', worker }, 'p').name!;
    const op = s.submit(job('a'));
    await bots.update(a, {}, Infinity);
    clock.advance(10_001);
    bots.expire();
    expect(bots.list().map((b) => b.botId)).toEqual([]);
    expect(op.stage).toBe('QUEUED');
    const b = bots.create('', { botId: 'b', worker }, 'p').name!;
    expect((await bots.update(b, {}, Infinity)).leases![0]!.state).toBe(LeaseState.PENDING);
  });

  it('tells the bot CANCELLED when the client cancels, until the bot lets go', async () => {
    make();
    const name = bots.create('', { botId: 'b1', worker }, 'p').name!;
    const op = s.submit(job('a'));
    const id = (await bots.update(name, {}, Infinity)).leases![0]!.id;
    s.cancel(op.name);
    expect(op.response?.status?.code).toBe(1);
    const told = await bots.update(name, { leases: [{ id, state: LeaseState.ACTIVE }] }, Infinity);
    expect(told.leases).toEqual([{ id, state: LeaseState.CANCELLED }]);
    const after = await bots.update(name, { leases: [{ id, state: LeaseState.CANCELLED }] }, Infinity);
    expect(after.leases).toEqual([]);
  });

  it('holds an idle poll until work comes, and answers before the deadline without work', async () => {
    clock = new ManualClock(Date.now());
    s = new Scheduler([], { clock });
    ac = new MemoryActionCache();
    bots = new BotSessions(s, ac, silentLogger, { sessionTimeoutMs: 10_000, maxPollMs: 60_000 }, clock);
    const name = bots.create('', { botId: 'b1', worker }, 'p').name!;
    const polling = bots.update(name, {}, Infinity);
    const op = s.submit(job('a'));
    expect((await polling).leases![0]!.state).toBe(LeaseState.PENDING);
    expect(op.stage).toBe('EXECUTING');
    // A deadline that leaves no room: answered at once, empty.
    const b2 = bots.create('', { botId: 'b2', worker }, 'p').name!;
    expect((await bots.update(b2, {}, clock.now() + 500)).leases).toEqual([]);
  });
});
