import type { CompletedAction, StatusSnapshot } from '../../src/status/status-snapshot.js';

const T0 = Date.parse('2026-03-01T12:00:00Z');
const iso = (offsetMs: number): string => new Date(T0 + offsetMs).toISOString();
const series = (f: (i: number) => number): number[] => Array.from({ length: 60 }, (_, i) => f(i));

export function completion(i: number, over: Partial<CompletedAction> = {}): CompletedAction {
  return {
    operation: `operations/done-${i}`,
    argv: ['sh', '-c', `make -C src/module-${i} all`],
    pool: 'native',
    client: 'ipv4:127.0.0.1:40000',
    completedAt: iso(-i * 1000),
    durationMs: 1500 + i,
    exitCode: 0,
    status: 'OK',
    cached: false,
    ...over,
  };
}

/** A busy daemon: three native slots (two running), an unavailable arm64 pool, a queue, completions. */
export function busySnapshot(over: Partial<StatusSnapshot> = {}): StatusSnapshot {
  return {
    version: '0.1.0',
    startedAt: iso(-7_980_000),
    uptimeSeconds: 7980,
    takenAt: iso(0),
    listeners: ['127.0.0.1:50051'],
    metrics: { url: 'http://127.0.0.1:9464/metrics' },
    dataDir: '/home/me/.local/share/reexec',
    execution: {
      pools: [
        {
          name: 'native',
          isas: ['x86-64'],
          queueDepth: 4,
          slots: [
            {
              slot: 'native-0',
              action: { operation: 'operations/run-a', argv: ['gcc', '-c', 'foo.c', '-o', 'foo.o'], pool: 'native', client: 'ipv4:127.0.0.1:41234', stage: 'EXECUTING', phase: 'running', startedAt: iso(-12_300), elapsedMs: 12_300, queuedMs: 5 },
            },
            {
              slot: 'native-1',
              action: { operation: 'operations/run-b', argv: ['sh', '-c', 'sleep 100'], pool: 'native', client: 'ipv4:127.0.0.1:41235', stage: 'EXECUTING', phase: 'uploading', startedAt: iso(-245_000), elapsedMs: 245_000, queuedMs: 100 },
            },
            { slot: 'native-2', action: null },
          ],
        },
        { name: 'arm64', isas: ['aarch64'], unavailable: 'qemu-user-static is not installed', queueDepth: 0, slots: [] },
      ],
      queued: [1, 2, 3, 4].map((i) => ({ operation: `operations/wait-${i}`, argv: ['cc', `unit-${i}.c`], pool: 'native', client: 'ipv4:127.0.0.1:41236', queuedAt: iso(-i * 1000), waitingMs: i * 1000, priority: 0 })),
      queuedTotal: 4,
      runningTotal: 2,
      recent: [
        completion(1, { cached: true, durationMs: 0, argv: ['gcc', '-c', 'cached.c'] }),
        completion(2, { exitCode: 3, argv: ['false-ish', '--fail'] }),
        completion(3, { exitCode: null, status: 'DEADLINE_EXCEEDED', argv: ['sleep', 'forever'] }),
        ...[4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15].map((i) => completion(i)),
      ],
      throughput: { windowSeconds: 60, executed: series((i) => (i % 7 === 0 ? 3 : i % 3)), cached: series((i) => (i > 50 ? 1 : 0)) },
    },
    cache: {
      ac: { entries: 42, hits: 30, misses: 10, hitRate: 0.75, lastMinute: { hits: 6, misses: 2, hitRate: 0.75 }, perSecond: { hits: series((i) => (i % 4 === 0 ? 1 : 0)), misses: series((i) => (i % 8 === 1 ? 1 : 0)) } },
      cas: { blobs: 12_345, bytes: 3 * 1024 ** 3, bytesMeasuredAt: iso(0), budgetBytes: 10 * 1024 ** 3, disk: { totalBytes: 500 * 1024 ** 3, freeBytes: 200 * 1024 ** 3 } },
    },
    rpc: {
      windowSeconds: 60,
      calls: 600,
      misses: 10,
      errors: 2,
      bytesIn: 50 * 1024 ** 2,
      bytesOut: 8 * 1024 ** 2,
      // Out: an average that is not a whole number of bytes per second (505.68…), as a real minute gives.
      perSecond: { calls: series((i) => 10 + (i % 5)), bytesIn: series((i) => i * 10_000), bytesOut: series((i) => (i % 3 === 0 ? 1517.05 : 0)) },
      methods: [
        { method: 'ContentAddressableStorage.FindMissingBlobs', calls: 300, misses: 0, errors: 0, meanMs: 1.2 },
        { method: 'Execution.Execute', calls: 200, misses: 0, errors: 2, meanMs: 1500 },
        { method: 'ByteStream.Write', calls: 90, misses: 0, errors: 0, meanMs: 40 },
        { method: 'ActionCache.GetActionResult', calls: 10, misses: 10, errors: 0, meanMs: 0.4 },
      ],
    },
    gc: null,
    ...over,
  };
}

/** ink's frames without colours. */
export const plain = (frame: string | undefined): string => (frame ?? '').replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '');
