import { describe, expect, it } from 'vitest';
import type { Job } from '../../src/scheduler/operation.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { collectStatus, RECENT_LIMIT, shortArgv } from '../../src/status/collect-status.js';

const NOW = Date.parse('2026-03-01T12:00:00Z');

function job(args: string[], priority = 0): Job {
  return {
    instance: { value: '' },
    actionDigest: { key: `sha256:${args.join('-')}`, sizeBytes: 1 },
    action: {},
    command: { arguments: args },
    platform: { isas: ['x86-64'] },
    priority,
    doNotCache: true,
    timeoutMs: 0,
  } as unknown as Job;
}

describe('collectStatus', () => {
  it('lists the newest completions first, at most RECENT_LIMIT, and counts the last minute per second', () => {
    const scheduler = new Scheduler([{ name: 'native', isas: ['x86-64'], slots: 2 }]);
    try {
      // 120 completions, one every 1.5 s back from now, every third a cache hit.
      for (let i = 0; i < 120; i++) {
        const op = scheduler.recordCompleted(job(['cc', `f${i}.c`]), { result: { exitCode: i % 5 === 0 ? 1 : 0 }, cachedResult: i % 3 === 0, status: { code: 0 } });
        op.execution.completedAt = new Date(NOW - i * 1500);
        (op as { queuedAt: Date }).queuedAt = new Date(op.execution.completedAt.getTime() - 200);
      }
      const s = collectStatus({ version: 'v', startedAt: new Date(NOW - 1000), listeners: [], dataDir: '/d', now: () => NOW, execution: { scheduler, running: new Map() } });
      const ex = s.execution!;
      expect(ex.recent).toHaveLength(RECENT_LIMIT);
      expect(ex.recent.map((r) => r.argv[1])).toEqual(Array.from({ length: RECENT_LIMIT }, (_, i) => `f${i}.c`));
      expect(ex.recent[0]).toMatchObject({ exitCode: 1, cached: true, durationMs: 200, status: 'OK' });
      // Completions at ages 0, 1.5, 3 … 58.5 s: 40 in the window.
      const executed = ex.throughput.executed.reduce((a, b) => a + b, 0);
      const cached = ex.throughput.cached.reduce((a, b) => a + b, 0);
      expect(executed + cached).toBe(40);
      expect(cached).toBe(14);
      expect(ex.throughput.executed[59]! + ex.throughput.cached[59]!).toBe(1); // the one finishing now
    } finally {
      scheduler.close();
    }
  });

  it('lists queued actions by priority, then arrival, with the total', () => {
    const scheduler = new Scheduler([{ name: 'native', isas: ['x86-64'], slots: 1 }]);
    try {
      scheduler.submit(job(['late']), { client: 'ipv4:127.0.0.1:1' });
      scheduler.submit(job(['urgent'], -5), { client: 'ipv4:127.0.0.1:2' });
      scheduler.submit(job(['later']), { client: 'ipv4:127.0.0.1:3' });
      const s = collectStatus({ version: 'v', startedAt: new Date(), listeners: [], dataDir: '/d', execution: { scheduler, running: new Map() } });
      expect(s.execution!.queued.map((q) => q.argv[0])).toEqual(['urgent', 'late', 'later']);
      expect(s.execution!.queuedTotal).toBe(3);
      expect(s.execution!.pools[0]).toMatchObject({ name: 'native', queueDepth: 3, slots: [{ slot: 'native-0', action: null }] });
      expect(s.execution!.queued[0]!.client).toBe('ipv4:127.0.0.1:2');
    } finally {
      scheduler.close();
    }
  });

  it('shortens long argv words and keeps the first eight', () => {
    const long = 'x'.repeat(200);
    const out = shortArgv(['a', long, '3', '4', '5', '6', '7', '8', '9']);
    expect(out).toHaveLength(8);
    expect(out[1]).toHaveLength(60);
    expect(out[1]).toContain('…');
  });
});
