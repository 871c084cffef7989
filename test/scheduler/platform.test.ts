import { describe, expect, it } from 'vitest';
import { canonicalIsa, parsePlatform } from '../../src/scheduler/platform.js';

const props = (...kv: Array<[string, string]>) => ({ properties: kv.map(([name, value]) => ({ name, value })) });

describe('parsePlatform', () => {
  it('defaults to linux on the host ISA, uid 0, no network, rootfs sandbox', () => {
    expect(parsePlatform(undefined, 'x86-64')).toMatchObject({ osFamily: 'linux', isas: ['x86-64'], uid: 0, gid: 0, network: false, sandbox: 'rootfs' });
  });

  it('accepts BuildStream and REAPI-lexicon ISA names as one', () => {
    expect(parsePlatform(props(['ISA', 'arm-a64'])).isas).toEqual(['aarch64']);
    expect(parsePlatform(props(['ISA', 'aarch64'])).isas).toEqual(['aarch64']);
    expect(canonicalIsa('x86_64')).toBe('x86-64');
    expect(canonicalIsa('ppc64el')).toBe('power-isa-le');
  });

  it('keeps several ISA values (they are AND-ed by matching)', () => {
    expect(parsePlatform(props(['ISA', 'x86-64'], ['ISA', 'x86-32'])).isas).toEqual(['x86-64', 'x86-32']);
  });

  it('honours unixUID, unixGID, network and the sandbox selector', () => {
    expect(parsePlatform(props(['unixUID', '1000'], ['unixGID', '100'], ['network', 'on'], ['reexec-sandbox', 'host-tools']))).toMatchObject({
      uid: 1000,
      gid: 100,
      network: true,
      sandbox: 'host-tools',
    });
  });

  it('refuses what it cannot honour, naming the property', () => {
    expect(() => parsePlatform(props(['container-image', 'docker://debian']))).toThrow(/container-image/);
    expect(() => parsePlatform(props(['OSFamily', 'windows']))).toThrow(/OSFamily="windows"/);
    expect(() => parsePlatform(props(['ISA', 'mips-r6']))).toThrow(/ISA="mips-r6"/);
    expect(() => parsePlatform(props(['unixUID', '-1']))).toThrow(/unixUID="-1"/);
    expect(() => parsePlatform(props(['network', 'maybe']))).toThrow(/network="maybe"/);
    expect(() => parsePlatform(props(['OSFamily', 'linux'], ['OSFamily', 'linux']))).toThrow(/OSFamily is given 2 times/);
    try {
      parsePlatform(props(['container-image', 'x']));
    } catch (err) {
      expect((err as { code: number }).code).toBe(9);
    }
  });
});
