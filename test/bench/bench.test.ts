import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatReport } from '../../src/bench/report.js';
import { DEFAULT_BENCH_OPTIONS, runBench } from '../../src/bench/run-bench.js';
import type { BenchResult, SuiteResult } from '../../src/bench/types.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';

const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url));
const MiB = 1024 * 1024;
const SIZE = 2 * MiB;
const BLOBS = 50;
const BATCHES = 2;

function suite(r: BenchResult, name: string): SuiteResult {
  const s = r.suites.find((x) => x.name === name);
  expect(s, `suite ${name}`).toBeDefined();
  return s!;
}

/** The JSON contract, and figures that agree with each other (no timing assertions). */
function expectConsistent(r: BenchResult, repeat: number): void {
  expect(r.host.cpus).toBeGreaterThan(0);
  expect(r.host.node).toBe(process.version);
  expect(typeof r.baselines).toBe('string');
  expect(r.suites.map((s) => s.name)).toEqual(['cas-large', 'cas-small']);
  for (const s of r.suites) {
    expect(s.metrics.length).toBeGreaterThan(0);
    for (const m of s.metrics) {
      expect(m).toMatchObject({ name: expect.any(String), value: expect.any(Number), unit: expect.any(String), ratio: expect.any(Number) });
      expect(m.baseline).toMatchObject({ name: expect.any(String), value: expect.any(Number), unit: m.unit });
      expect(m.value).toBeGreaterThan(0);
      expect(m.baseline.value).toBeGreaterThan(0);
      expect(Number.isFinite(m.ratio)).toBe(true);
      expect(m.ratio).toBeCloseTo(m.value / m.baseline.value, 9);
      expect(m.samples).toHaveLength(repeat);
      expect(m.baselineSamples).toHaveLength(repeat);
    }
  }

  const large = suite(r, 'cas-large');
  expect(large.metrics.map((m) => m.name)).toEqual(['bytestream-write', 'bytestream-read', 'bytestream-write-vs-disk', 'bytestream-write-vs-sha256']);
  expect(large.metrics.every((m) => m.unit === 'MiB/s')).toBe(true);
  expect(large.checks).toEqual({
    bytesWritten: SIZE * repeat,
    committedBytes: SIZE * repeat,
    bytesRead: SIZE * repeat,
    contentMatches: true,
    rawBytesUploaded: SIZE * repeat,
    rawBytesDownloaded: SIZE * repeat,
  });

  const small = suite(r, 'cas-small');
  expect(small.metrics.map((m) => [m.name, m.unit])).toEqual([
    ['batch-update', 'blobs/s'],
    ['find-missing', 'digests/s'],
    ['batch-read', 'blobs/s'],
    ['batch-update-vs-sha256', 'blobs/s'],
  ]);
  const blobs = BLOBS * BATCHES * repeat;
  expect(small.checks).toMatchObject({
    blobsUploaded: blobs,
    uploadErrors: 0,
    blobsMissingAfterUpload: 0,
    blobsRead: blobs,
    blobsReadMatching: blobs,
    blobsPerRepetition: BLOBS * BATCHES,
  });
  // The echo baseline carries as many bytes as one BatchUpdateBlobs request: ≥ the blobs' bytes.
  expect(small.checks['requestBytes']).toBeGreaterThan(BLOBS * 100);
}

describe('reexec bench', () => {
  it('runs both suites against a temporary in-process daemon and removes its data dir', async () => {
    let tempDir = '';
    const lines: string[] = [];
    const r = await runBench({
      ...DEFAULT_BENCH_OPTIONS,
      suites: ['cas-large', 'cas-small'],
      sizeBytes: SIZE,
      blobsPerBatch: BLOBS,
      batches: BATCHES,
      repeat: 1,
      progress: (l) => lines.push(l),
      onTempDir: (d) => (tempDir = d),
    });
    expectConsistent(r, 1);
    expect(r.target).toMatchObject({ kind: 'in-process', fsync: true, instance: '' });
    expect(r.target.note).toMatch(/fsync on/);
    expect(tempDir).not.toBe('');
    expect(existsSync(tempDir)).toBe(false);
    expect(lines.some((l) => l.startsWith('cas-large 1/1:'))).toBe(true);
    expect(lines.some((l) => l.startsWith('cas-small 1/1:'))).toBe(true);

    const table = formatReport(r);
    expect(table).toMatch(/ByteStream\.Write\s+[\d,.]+\s+MiB\/s/);
    expect(table).toMatch(/BatchUpdateBlobs\s+[\d,.]+\s+blobs\/s/);
    expect(table).toMatch(/fsync on/);
    expect(table).toMatch(/\d\.\d\d×/);
  });

  describe('against another server through --endpoint', () => {
    let d: TestDaemon;
    beforeAll(async () => {
      d = await startTestDaemon();
    });
    afterAll(() => d.stop());

    it('prints the JSON result, and the blobs land in that server', async () => {
      const res = await execa(
        process.execPath,
        [BIN, 'bench', '--json', '--endpoint', `grpc://${d.address}`, '--instance', 'bench/x', '--size', '2MiB', '--batch-blobs', String(BLOBS), '--batches', String(BATCHES), '--repeat', '2'],
        { reject: false },
      );
      expect(res.exitCode, res.stderr).toBe(0);
      const r = JSON.parse(res.stdout) as BenchResult;
      expectConsistent(r, 2);
      expect(r.target).toMatchObject({ kind: 'endpoint', endpoint: `grpc://${d.address}`, instance: 'bench/x' });
      expect(res.stderr).toMatch(/cas-large 2\/2:/);

      // Two large blobs of the run (plus the warm-up one) are files in the other daemon's store.
      const files: number[] = [];
      const walk = (dir: string): void => {
        for (const e of readdirSync(dir, { withFileTypes: true })) {
          const p = join(dir, e.name);
          if (e.isDirectory()) walk(p);
          else files.push(statSync(p).size);
        }
      };
      walk(join(d.dataDir, 'blobs'));
      expect(files.filter((n) => n === SIZE).length).toBe(3);
    });

    it('refuses an endpoint it cannot reach, with exit code 2', async () => {
      const res = await execa(process.execPath, [BIN, 'bench', '--endpoint', 'grpc://127.0.0.1:1', '--suite', 'cas-small', '--repeat', '1'], { reject: false });
      expect(res.exitCode).toBe(2);
      expect(res.stderr).toMatch(/cannot use grpc:\/\/127\.0\.0\.1:1/);
    });

    it('refuses a malformed endpoint', async () => {
      const res = await execa(process.execPath, [BIN, 'bench', '--endpoint', 'not an address'], { reject: false });
      expect(res.exitCode).toBe(2);
      expect(res.stderr).toMatch(/--endpoint "not an address"/);
    });
  });
});
