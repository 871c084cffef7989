import { describe, expect, it } from 'vitest';
import { compileConfig, ConfigError, defaultConfig } from '../../src/config/config.js';
import { formatBytes, resolveBudget, touchIntervalFor } from '../../src/gc/storage-budget.js';

const GiB = 1024 ** 3;
const storage = (raw: Record<string, unknown>) => compileConfig({ storage: raw }).storage;

describe('storage budget', () => {
  it('defaults to half the file system, evicting from 90% to 80% of that, refusing writes past 110%', () => {
    const b = resolveBudget(defaultConfig().storage, 200 * GiB);
    expect(b.maxBytes).toBe(100 * GiB);
    expect(b.highBytes).toBe(90 * GiB);
    expect(b.lowBytes).toBe(80 * GiB);
    expect(b.hardLimitBytes).toBe(110 * GiB);
    expect(b.minFreeBytes).toBe(10 * GiB);
    expect(b.graceSeconds).toBe(600);
    expect(b.stagingCacheBytes).toBe(10 * GiB);
    expect(b.reserveBytes).toBe(64 * 1024 ** 2);
  });

  it('keeps a disk reserve of 5% of the file system, at least 4 MiB and at most 64 MiB, unless set', () => {
    const MiB = 1024 ** 2;
    expect(resolveBudget(defaultConfig().storage, 48 * MiB).reserveBytes).toBe(4 * MiB);
    expect(resolveBudget(defaultConfig().storage, 400 * MiB).reserveBytes).toBe(20 * MiB);
    expect(resolveBudget(defaultConfig().storage, 2 * GiB).reserveBytes).toBe(64 * MiB);
    expect(resolveBudget(storage({ 'disk-reserve': '1GiB' }), 200 * GiB).reserveBytes).toBe(GiB);
    expect(resolveBudget(storage({ 'disk-reserve': '1%' }), 200 * GiB).reserveBytes).toBe(2 * GiB);
    expect(resolveBudget(storage({ 'disk-reserve': 0 }), 200 * GiB).reserveBytes).toBe(0);
    expect(resolveBudget(storage({ 'disk-reserve': 'auto' }), 200 * GiB).reserveBytes).toBe(64 * MiB);
    expect(() => storage({ 'disk-reserve': 'lots' })).toThrow(/disk-reserve/);
  });

  it('takes 0 and 0% for min-free-disk: off', () => {
    for (const off of [0, '0', '0%', '0B', 'off']) expect(resolveBudget(storage({ 'min-free-disk': off }), 200 * GiB).minFreeBytes, String(off)).toBe(0);
    expect(() => storage({ 'min-free-disk': '-1%' })).toThrow(/min-free-disk/);
  });

  it('takes sizes, percentages and fractions', () => {
    const b = resolveBudget(
      storage({ 'max-bytes': '10GiB', 'high-watermark': 0.75, 'low-watermark': '5GiB', 'hard-limit': '12GiB', 'min-free-disk': '1GiB', 'grace-period': '90s', 'staging-cache-max-bytes': '50%' }),
      1000 * GiB,
    );
    expect(b).toEqual({ maxBytes: 10 * GiB, highBytes: 7.5 * GiB, lowBytes: 5 * GiB, hardLimitBytes: 12 * GiB, minFreeBytes: GiB, reserveBytes: 64 * 1024 ** 2, graceSeconds: 90, stagingCacheBytes: 5 * GiB });
    expect(storage({ 'grace-period': 0 }).gracePeriodSeconds).toBe(0);
  });

  it('refuses marks in the wrong order and malformed values, naming them', () => {
    expect(() => resolveBudget(storage({ 'low-watermark': '95%' }), GiB)).toThrow(/low-watermark .* must be below high-watermark/);
    expect(() => resolveBudget(storage({ 'hard-limit': '50%' }), GiB)).toThrow(/hard-limit .* must not be below high-watermark/);
    expect(() => storage({ 'max-bytes': '150%' })).toThrow(ConfigError);
    expect(() => storage({ 'high-watermark': 'lots' })).toThrow(/high-watermark/);
    expect(() => storage({ 'max-bytes': 'x%' })).toThrow(/max-bytes" is not a percentage/);
  });

  it('refreshes access times well within the grace period', () => {
    expect(touchIntervalFor(600)).toBe(300);
    expect(touchIntervalFor(7200)).toBe(600);
    expect(touchIntervalFor(0)).toBe(1);
  });

  it('formats sizes for people', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatBytes(110 * GiB)).toBe('110 GiB');
  });
});
