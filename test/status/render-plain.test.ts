import { describe, expect, it } from 'vitest';
import { formatBytes, formatByteRate, formatDuration, formatPercent, formatRate, hitRatios, sparkline, truncate } from '../../src/status/format.js';
import { renderPlain } from '../../src/status/render-plain.js';
import { busySnapshot } from '../tui/fixtures.js';

describe('formatting', () => {
  it('says durations, sizes, rates and ratios briefly', () => {
    expect(formatDuration(0.4)).toBe('<1ms');
    expect([850, 12_345, 245_000, 7_980_000, 3 * 86_400_000 + 4 * 3_600_000].map(formatDuration)).toEqual(['850ms', '12.3s', '4m05s', '2h13m', '3d04h']);
    expect([0, 1023, 1536, 10 * 1024 ** 2, 3.5 * 1024 ** 4].map(formatBytes)).toEqual(['0 B', '1023 B', '1.50 KiB', '10.0 MiB', '3.50 TiB']);
    // Averages and rates are not whole bytes: never "505.68333333333334 B/s".
    expect([505.68333333333334, 1023.6, 0.4, -2048].map(formatBytes)).toEqual(['506 B', '1.00 KiB', '0 B', '-2.00 KiB']);
    expect([formatByteRate(505.68333333333334), formatByteRate(1.5 * 1024 ** 2)]).toEqual(['506 B/s', '1.50 MiB/s']);
    expect([formatRate(600, 60), formatRate(3, 60), formatRate(0, 60), formatRate(1200, 60)]).toEqual(['10/s', '0.05/s', '0/s', '20/s']);
    expect([formatPercent(0.734), formatPercent(null)]).toEqual(['73%', '–']);
    expect(truncate('abcdef', 4)).toBe('abc…');
    expect(truncate('abc', 4)).toBe('abc');
  });

  it('draws sparklines of the last values, blank for nothing, scaled to the largest', () => {
    expect(sparkline([0, 1, 2, 4, 8], 5)).toBe(' ▁▂▄█');
    expect(sparkline([8, 8, 0, 4], 3)).toBe('█ ▄');
    expect(sparkline([1], 4)).toBe('   █');
    expect(sparkline([null, 0.5, 1], 3, 1)).toBe(' ▄█');
    expect(sparkline([null, 0, 0.25], 3, 1)).toBe(' ▁▂');
    expect(hitRatios([1, 0, 3], [1, 0, 1])).toEqual([0.5, null, 0.75]);
  });
});

describe('renderPlain', () => {
  it('lists the bots, and what queued actions wait for a bot to offer', () => {
    const snap = busySnapshot();
    const ex = snap.execution!;
    ex.pools.push({ name: 'bots', isas: ['x86-64'], queueDepth: 1, slots: [{ slot: 'gpu-host-1', action: null }] });
    ex.queued.push({ operation: 'operations/q', argv: ['train.sh'], pool: 'bots', queuedAt: snap.takenAt, waitingMs: 5000, priority: 0, platform: ['OSFamily=linux', 'pool=gpu'] });
    ex.bots = [
      { botId: 'gpu-host-1', host: 'ipv4:10.0.0.7:40000', properties: ['OSFamily=linux', 'pool=gpu'], status: 'OK', lease: null, lastContact: snap.takenAt, idleSeconds: 2, leasesCompleted: 3 },
    ];
    const text = renderPlain(snap, { width: 160, queued: 20 });
    expect(text).toContain('  bots (x86-64)');
    expect(text).toContain('Bots (1 connected)');
    expect(text).toMatch(/ {2}gpu-host-1 .*seen 2\.0s ago · 3 done · OSFamily=linux pool=gpu · idle/);
    expect(text).toMatch(/train\.sh {2}\(for a bot offering OSFamily=linux, pool=gpu\)/);
  });

  it('prints every section in lines that fit the width', () => {
    const text = renderPlain(busySnapshot(), { width: 100 });
    const lines = text.trimEnd().split('\n');
    expect(Math.max(...lines.map((l) => [...l].length))).toBeLessThanOrEqual(100);
    expect(lines[0]).toMatch(/^reexec 0\.1\.0 · up 2h13m · serving 127\.0\.0\.1:50051 · \d\d:\d\d:\d\d$/);
    expect(text).toContain('Workers (2 running, 4 waiting)');
    expect(text).toMatch(/ {4}native-0 {2}running +12\.3s {2}gcc -c foo\.c -o foo\.o +127\.0\.0\.1:41234/);
    expect(text).toMatch(/ {4}native-1 {2}uploading +4m05s {2}sh -c sleep 100/);
    expect(text).toContain('    native-2  idle');
    expect(text).toContain('  arm64 (aarch64)  unavailable: qemu-user-static is not installed');
    expect(text).toContain('Queue (4 waiting)');
    expect(text).toMatch(/\d\d:\d\d:\d\d {2}cached +gcc -c cached\.c/);
    expect(text).toMatch(/\d\d:\d\d:\d\d {2}exit 3 +1\.5s {2}false-ish --fail/);
    expect(text).toMatch(/\d\d:\d\d:\d\d {2}DEADLINE_EXCEEDED +1\.5s {2}sleep forever/);
    expect(text).toMatch(/action cache {2}75% hits \(30 hits, 10 misses\) · last minute 75% · 42 entries/);
    expect(text).toMatch(/CAS {11}12345 blobs, 3\.00 GiB of 10\.0 GiB budget \(30%\) · disk 200 GiB free of 500 GiB/);
    expect(text).toMatch(/RPCs \(last minute, admin calls left out\): 600 calls \(10\/s\), 10 misses, 2 errors +[▁-█ ]+$/m);
    expect(text).toContain('  in 50.0 MiB (853 KiB/s), out 8.00 MiB (137 KiB/s)');
    expect(text).not.toMatch(/\d\.\d{3,}/);
    expect(text).toMatch(/Execution\.Execute +200 calls +0 misses +2 errors +mean 1\.5s/);
    expect(text).toMatch(/ActionCache\.GetActionResult +10 calls +10 misses +0 errors +mean <1ms/);
    // No colours, no cursor movement, no trailing blanks.
    expect(text).not.toMatch(/\u001b/);
    expect(lines.every((l) => l === l.trimEnd())).toBe(true);
  });

  it('says when remote execution is off and nothing ran yet', () => {
    const s = busySnapshot({ execution: null });
    expect(renderPlain(s)).toContain('Workers: remote execution is disabled in the config');
    const idle = busySnapshot();
    idle.execution = { ...idle.execution!, recent: [], queued: [], queuedTotal: 0 };
    expect(renderPlain(idle)).toContain('nothing finished yet');
    expect(renderPlain(idle)).not.toContain('Queue (');
  });
});
