import { describe, expect, it } from 'vitest';
import { resolvePools, whyUnavailable, type IsaSupport } from '../../src/execution/isa-support.js';
import { parsePlatform } from '../../src/scheduler/platform.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';

const support: IsaSupport[] = [
  { isa: 'x86-64', how: 'native', ok: true, detail: 'runs natively' },
  { isa: 'x86-32', how: 'personality', ok: true, detail: 'linux32' },
  { isa: 'aarch64', how: 'qemu', ok: true, detail: 'QEMU user mode: ok' },
  { isa: 's390x', how: 'qemu', ok: false, detail: 'QEMU user mode: s390x: binfmt entry qemu-s390x lacks the F (fix-binary) flag', fix: 'update-binfmts --enable qemu-s390x' },
];

describe('worker pools for ISAs', () => {
  it('auto: the host ISAs with a slot per core, every emulated ISA with half as many', () => {
    expect(resolvePools('auto', support, 4)).toEqual([
      { name: 'native', isas: ['x86-64', 'x86-32'], slots: 4, unavailable: undefined },
      { name: 'aarch64', isas: ['aarch64'], slots: 2 },
    ]);
  });

  it('configured pools the host cannot serve are marked unavailable with the reason and the fix', () => {
    const pools = resolvePools([{ name: 'z', isa: ['s390x'], slots: 1 }], support);
    expect(pools[0]!.unavailable).toContain('lacks the F (fix-binary) flag');
    expect(pools[0]!.unavailable).toContain('update-binfmts --enable qemu-s390x');
  });

  it('an action for an ISA without a working pool is refused at once, naming the ISA and the fix', () => {
    const s = new Scheduler(resolvePools('auto', support, 2), undefined, 60_000, (isa) => whyUnavailable(support, isa));
    const platform = parsePlatform({ properties: [{ name: 'ISA', value: 's390x' }] });
    expect(() => s.poolFor(platform)).toThrow(/ISA=s390x.*F \(fix-binary\).*update-binfmts --enable qemu-s390x/);
    expect(s.poolFor(parsePlatform({ properties: [{ name: 'ISA', value: 'arm-a64' }] })).name).toBe('aarch64');
    expect(s.poolFor(parsePlatform({ properties: [{ name: 'ISA', value: 'x86-32' }] })).name).toBe('native');
    s.close();
  });
});
