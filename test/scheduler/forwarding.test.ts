import { afterEach, describe, expect, it } from 'vitest';
import { compileConfig } from '../../src/config/config.js';
import { Digest } from '../../src/digest/digest.js';
import { InstanceName } from '../../src/digest/instance-name.js';
import type { Job } from '../../src/scheduler/operation.js';
import { offeredProperties, parsePlatform } from '../../src/scheduler/platform.js';
import { BOTS_POOL, Scheduler, UPSTREAM_POOL, type ForwardMode } from '../../src/scheduler/scheduler.js';

const job = (name: string, props: Array<[string, string]>): Job => ({
  instance: InstanceName.parse(''),
  actionDigest: Digest.compute(Buffer.from(name)),
  action: {},
  command: { arguments: [name] },
  platform: parsePlatform({ properties: props.map(([n, v]) => ({ name: n, value: v })) }, 'x86-64', () => true),
  priority: 0,
  doNotCache: false,
  timeoutMs: 1000,
});

describe('Scheduler: which actions go to the upstream (upstream.execute)', () => {
  let s: Scheduler | undefined;
  const make = (forward: ForwardMode): Scheduler => (s = new Scheduler([{ name: 'native', isas: ['x86-64'], slots: 1 }], { forward }));
  afterEach(() => s?.close());

  it('local: nothing is forwarded; an ISA no pool offers is refused at once', () => {
    const sc = make('local');
    expect(() => sc.submit(job('a', [['ISA', 'aarch64']]))).toThrow(/aarch64/);
    expect(sc.forwarded(job('b', [['ISA', 'x86-64']]).platform)).toBe(false);
  });

  it('upstream: every action goes to the upstream worker, never to a local slot or a bot', async () => {
    const sc = make('upstream');
    sc.remoteConnected('bot', offeredProperties([{ name: 'ISA', value: 'x86-64' }]));
    const op = sc.submit(job('a', [['ISA', 'x86-64']]));
    expect(op.pool).toBe(UPSTREAM_POOL);
    expect(sc.tryLease(sc.localWorker(sc.pools[0]!))).toBeUndefined();
    expect(sc.tryLease({ name: 'bot bot', pool: BOTS_POOL, accepts: () => true })).toBeUndefined();
    const lease = sc.tryLease(sc.upstreamWorker('grpc://up:1'));
    expect(lease?.execution).toBe(op.execution);
    expect(op.execution.worker).toBe('grpc://up:1');
  });

  it('unsupported: what a local pool or a bot runs stays here, the rest goes upstream', () => {
    const sc = make('unsupported');
    sc.remoteConnected('bot', offeredProperties([{ name: 'ISA', value: 'x86-64' }, { name: 'gpu', value: 'yes' }]));
    const native = sc.submit(job('n', [['ISA', 'x86-64']]));
    const bots = sc.submit(job('g', [['ISA', 'x86-64'], ['gpu', 'yes']]));
    const arm = sc.submit(job('a', [['ISA', 'aarch64']]));
    expect([native.pool, bots.pool, arm.pool]).toEqual(['native', BOTS_POOL, UPSTREAM_POOL]);
    const up = sc.upstreamWorker('grpc://up:1');
    expect(sc.tryLease(up)?.execution).toBe(arm.execution);
    expect(sc.tryLease(up)).toBeUndefined();
    expect(sc.tryLease(sc.localWorker(sc.pools[0]!))?.execution).toBe(native.execution);
  });
});

describe('config: upstream.execute', () => {
  it('takes local, upstream or unsupported (default local) and max-in-flight', () => {
    expect(compileConfig({ upstream: { url: 'grpc://cluster:8980' } }).upstream).toMatchObject({ execute: 'local', maxInFlight: 64 });
    expect(compileConfig({ upstream: { url: 'grpc://cluster:8980', execute: 'unsupported', 'max-in-flight': 8 } }).upstream).toMatchObject({ execute: 'unsupported', maxInFlight: 8 });
    expect(() => compileConfig({ upstream: { url: 'grpc://cluster:8980', execute: 'remote' } })).toThrow(/execute.*local, upstream, unsupported/);
  });
});
