import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareResults } from '../../src/bench/compare.js';
import { BenchProgress } from '../../src/bench/progress.js';
import { formatReport } from '../../src/bench/report.js';
import { validateBenchResult } from '../../src/bench/result-schema.js';
import { DEFAULT_BENCH_OPTIONS, runBench } from '../../src/bench/run-bench.js';
import { exitZeroElf } from '../../src/bench/tiny-elf.js';
import type { BenchResult, SuiteResult } from '../../src/bench/types.js';
import { call } from '../../src/client/reapi-client.js';
import { bindAddress, createGrpcServer } from '../../src/daemon/grpc-server.js';
import { createTlsSetup } from '../../src/host/tls-setup.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { capabilitiesDefinition } from '../../src/services/capabilities-service.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';

const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url));
const MiB = 1024 * 1024;
const noBwrap = findBubblewrap() ? undefined : 'bubblewrap (apt-get install bubblewrap)';
const hasGcc = ['/usr/bin/gcc', '/usr/local/bin/gcc', '/bin/gcc'].some(existsSync);

/** Tiny sizes: what is measured and reported, not speed. */
const TINY = {
  concurrency: [1, 2],
  sizes: [1 * MiB, 2 * MiB],
  sweepSize: 1 * MiB,
  minBytesPerCell: 2 * MiB,
  blobSizes: [100, 4096],
  blobsPerBatch: 20,
  batches: 2,
  acOps: 5,
  actions: 2,
  stagingFiles: 150,
  compiles: 2,
};
const TINY_FLAGS = [
  '--concurrency', '1,2', '--sizes', '1MiB,2MiB', '--sweep-size', '1MiB', '--cell-bytes', '2MiB', '--blob-sizes', '100B,4KiB',
  '--batch-blobs', '20', '--batches', '2', '--ac-calls', '5', '--actions', '2', '--staging-files', '150', '--compiles', '2',
];

function suite(r: BenchResult, name: string): SuiteResult {
  const s = r.suites.find((x) => x.name === name);
  expect(s, `suite ${name}`).toBeDefined();
  return s!;
}

const metricIds = (s: SuiteResult): string[] => s.metrics.map((m) => m.id);

/** The JSON contract, and figures that agree with each other and with the work done (no timing assertions). */
function expectConsistent(r: BenchResult, repeat: number, suites: string[]): void {
  expect(validateBenchResult(JSON.parse(JSON.stringify(r)))).toEqual([]);
  expect(r.host.cpus).toBeGreaterThan(0);
  expect(r.host.loadAvg).toHaveLength(3);
  expect(r.concurrency).toEqual([1, 2]);
  expect(r.suites.map((s) => s.name)).toEqual(suites);
  const ids = r.suites.flatMap(metricIds);
  expect(new Set(ids).size).toBe(ids.length);
  for (const s of r.suites) {
    for (const m of s.metrics) {
      expect(m.value, m.id).toBeGreaterThan(0);
      expect(m.samples, m.id).toHaveLength(repeat);
      expect(m.id.startsWith(`${s.name}/${m.name}/`)).toBe(true);
      expect(m.id.endsWith(`/c${m.concurrency}`)).toBe(true);
      if (m.baseline) {
        expect(m.baseline.unit).toBe(m.unit);
        expect(m.baseline.value, m.id).toBeGreaterThan(0);
        expect(m.ratio!).toBeCloseTo(m.value / m.baseline.value, 9);
        expect(m.baselineSamples.length, m.id).toBeGreaterThan(0);
      } else expect(m.ratio).toBeNull();
    }
  }

  if (suites.includes('cas-small')) {
    const small = suite(r, 'cas-small');
    expect(small.status).toBe('ok');
    // Every blob size at every concurrency, plus the hashing comparison at concurrency 1.
    expect(metricIds(small)).toEqual(
      [100, 4096].flatMap((b) => {
        const size = b === 100 ? '100B' : '4KiB';
        return [
          ...['batch-update', 'find-missing', 'batch-read', 'batch-update-vs-sha256'].map((n) => `cas-small/${n}/${size}/c1`),
          ...['batch-update', 'find-missing', 'batch-read'].map((n) => `cas-small/${n}/${size}/c2`),
        ];
      }),
    );
    const blobs = 2 /* sizes */ * 2 /* concurrency */ * repeat * 20 * 2;
    expect(small.checks).toEqual({ blobsUploaded: blobs, uploadErrors: 0, blobsMissingAfterUpload: 0, blobsRead: blobs, blobsReadMatching: blobs });
  }

  if (suites.includes('cas-large')) {
    const large = suite(r, 'cas-large');
    expect(large.status).toBe('ok');
    expect(metricIds(large)).toEqual([
      ...['bytestream-write', 'bytestream-read', 'bytestream-write-vs-disk', 'bytestream-write-vs-sha256'].map((n) => `cas-large/${n}/1MiB/c1`),
      ...['bytestream-write', 'bytestream-read', 'bytestream-write-vs-disk', 'bytestream-write-vs-sha256'].map((n) => `cas-large/${n}/2MiB/c1`),
      ...['bytestream-write', 'bytestream-read', 'bytestream-write-vs-disk'].map((n) => `cas-large/${n}/1MiB/c2`),
      'cas-large/bytestream-write-zstd/1MiB/c1',
      'cas-large/bytestream-read-zstd/1MiB/c1',
      'cas-large/bytestream-write-resumed/1MiB/c1',
    ]);
    // zstd against identity on text, in the same run: both figures measured, the text shrank on the wire both ways.
    for (const name of ['bytestream-write-zstd', 'bytestream-read-zstd']) {
      const m = large.metrics.find((x) => x.name === name)!;
      expect(m.baseline?.value, name).toBeGreaterThan(0);
      expect(m.ratio, name).toBeGreaterThan(0);
    }
    const { zstdWireBytesWritten, zstdWireBytesRead, ...rest } = large.checks as Record<string, number | boolean>;
    expect(zstdWireBytesWritten).toBeLessThan(MiB * repeat / 2);
    expect(zstdWireBytesRead).toBeLessThan(MiB * repeat / 2);
    // Cells of 2 MiB at least: 2 × 1 MiB, 1 × 2 MiB, 2 × 1 MiB two at a time.
    const bytes = 6 * MiB * repeat;
    expect(rest).toEqual({
      zstdBytesWritten: MiB * repeat,
      zstdBytesRead: MiB * repeat,
      zstdContentMatches: true,
      bytesWritten: bytes,
      committedBytes: bytes,
      bytesRead: bytes,
      contentMatches: true,
      rawBytesUploaded: bytes,
      rawBytesDownloaded: bytes,
      resumedUploads: repeat,
      // Half of the blob went up before the break, and the server kept it.
      bytesKeptAfterBreak: 0.5 * MiB * repeat,
      bytesSentAfterResume: 0.5 * MiB * repeat,
      resumedCommittedBytes: 1 * MiB * repeat,
      resumedContentMatches: true,
    });
  }

  if (suites.includes('ac')) {
    const ac = suite(r, 'ac');
    expect(ac.status).toBe('ok');
    expect(metricIds(ac)).toEqual([1, 2].flatMap((c) => ['update', 'update-latency', 'get-hit', 'get-hit-latency', 'get-miss-latency'].map((n) => `ac/${n}/c${c}`)));
    const calls = 5 * 2 * repeat;
    expect(ac.checks).toEqual({ updates: calls, hits: calls, hitsMatching: calls, misses: calls, unexpected: 0 });
    expect(ac.metrics.find((m) => m.name === 'update-latency')!.better).toBe('lower');
  }

  if (suites.includes('exec')) {
    const exec = suite(r, 'exec');
    expect(exec.status).toBe(hasGcc ? 'ok' : 'partial');
    const ids = metricIds(exec);
    expect(ids.slice(0, 4)).toEqual(['exec/noop/c1', 'exec/noop-latency/c1', 'exec/noop/c2', 'exec/noop-latency/c2']);
    for (const v of ['read-only', 'writable']) {
      for (const when of ['first', 'again']) {
        expect(ids).toContain(`exec/staging/${v}-${when}/c1`);
        expect(ids).toContain(`exec/staging-action/${v}-${when}/c1`);
      }
    }
    const noop = exec.metrics.find((m) => m.id === 'exec/noop/c2')!;
    expect(noop.unit).toBe('actions/s');
    expect(noop.baseline!.name).toBe('bwrap-spawn');
    expect(noop.baseline!.label).toContain('bwrap --unshare-all --ro-bind / / /bin/true');
    // Staging is compared with writing the same files here; the action around it with a no-op action.
    expect(exec.metrics.find((m) => m.id === 'exec/staging/read-only-again/c1')!.baseline!.name).toBe('local-file-writes');
    expect(exec.metrics.find((m) => m.id === 'exec/staging-action/writable-first/c1')!.baseline!.name).toBe('noop-action');
    const actions = 2 * 2 * repeat;
    expect(exec.checks).toMatchObject({
      noopActions: actions,
      noopSucceeded: actions,
      noopCachedResults: 0,
      bwrapSpawns: actions,
      bwrapSucceeded: actions,
      stagingActions: 4 * repeat,
      stagingSucceeded: 4 * repeat,
      stagingTimesReported: 4 * repeat,
      stagingFilesLocal: 2 * 150 * repeat,
    });
    if (hasGcc) {
      expect(ids).toEqual(expect.arrayContaining(['exec/compile/c1', 'exec/compile-latency/c1', 'exec/compile/c2', 'exec/compile-latency/c2']));
      expect(exec.checks).toMatchObject({ compileActions: actions, compileSucceeded: actions, compileOutputsElf: 2 * repeat, localCompiles: actions, localCompilesSucceeded: actions });
    } else {
      expect(exec.unsupported.map((u) => u.what)).toEqual(['compile']);
    }
  }
}

describe('reexec bench', () => {
  it.skipIf(noBwrap)('runs every suite against a temporary daemon (execution on) and removes its data dir', { timeout: 180_000 }, async () => {
    let tempDir = '';
    const lines: string[] = [];
    const r = await runBench({
      ...DEFAULT_BENCH_OPTIONS,
      ...TINY,
      suites: ['cas-small', 'cas-large', 'ac', 'exec'],
      repeat: 1,
      progress: new BenchProgress({ write: (t: string) => lines.push(t) }, { tty: false }),
      onTempDir: (d) => (tempDir = d),
    });
    expectConsistent(r, 1, ['cas-small', 'cas-large', 'ac', 'exec']);
    expect(r.target).toMatchObject({ kind: 'temporary', fsync: true, execution: true, instance: '' });
    expect(r.target.note).toMatch(/fsync on/);
    expect(tempDir).not.toBe('');
    expect(existsSync(tempDir)).toBe(false);
    const out = lines.join('');
    expect(out).toMatch(/^cas-small 1\/4: /m);
    expect(out).toMatch(/^cas-large 4\/5: zstd ByteStream of 1MiB/m);
    expect(out).toMatch(/^cas-large 5\/5: resumable write/m);
    expect(out).toMatch(/^exec 1\/6: 2 no-op actions at concurrency 1/m);

    const table = formatReport(r);
    expect(table).toMatch(/ByteStream\.Write\s+1MiB\s+1\s+[\d,.]+\s+MiB\/s/);
    expect(table).toMatch(/BatchUpdateBlobs\s+100B\s+2\s+[\d,.]+\s+blobs\/s/);
    expect(table).toMatch(/no-op action latency p50\s+1\s+[\d,.]+\s+ms\s+[\d,.]+\s+\[\d+\]\s+[\d.]+×/);
    expect(table).toMatch(/raw `bwrap --unshare-all --ro-bind \/ \/ \/bin\/true` spawned here, 2 at once/);
    expect(table).toMatch(/load average/);
  });

  it.skipIf(noBwrap)('history: the no-op action with the action history on and off, interleaved, on two daemons of its own', { timeout: 180_000 }, async () => {
    const lines: string[] = [];
    const r = await runBench({ ...DEFAULT_BENCH_OPTIONS, ...TINY, suites: ['history'], historyRounds: 2, progress: new BenchProgress({ write: (t: string) => lines.push(t) }, { tty: false }) });
    expect(validateBenchResult(r)).toEqual([]);
    const h = suite(r, 'history');
    expect(h.status).toBe('ok');
    expect(metricIds(h)).toEqual(['history/noop/c1', 'history/noop-latency/c1', 'history/noop/c2', 'history/noop-latency/c2']);
    for (const m of h.metrics) {
      expect(m.samples).toHaveLength(2);
      expect(m.baselineSamples).toHaveLength(2);
      expect(m.baseline!.name).toBe('history-off');
      expect(m.ratio).toBeGreaterThan(0);
    }
    // 2 rounds × 2 pairs at each of 2 concurrencies; the history-on daemon recorded its 8 (and its warm-up).
    expect(h.checks).toMatchObject({ noopActions: 16, noopSucceeded: 16, historyEntries: 9, historyOffDaemonRecords: 'nothing (history off)' });
    expect(h.checks['pairedLatencyRatioC1']).toMatch(/^\d+\.\d{3}× \(95 % CI \d+\.\d{3}–\d+\.\d{3}, 4 pairs\)$/);
    expect(lines.join('')).toMatch(/^history 1\/4: round 1\/2, 2 pairs of no-op actions at concurrency 1: p50 history on [\d.,]+ ms, off [\d.,]+ ms/m);
  });

  describe('against a second reexec daemon through --endpoint', () => {
    let d: TestDaemon;
    let dir: string;
    beforeAll(async () => {
      d = await startTestDaemon();
      dir = mkdtempSync(join(tmpdir(), 'reexec-bench-test-'));
    });
    afterAll(async () => {
      await d?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it.skipIf(noBwrap)('prints JSON that follows the schema, and the blobs and actions land in that server', { timeout: 240_000 }, async () => {
      const res = await execa(process.execPath, [BIN, 'bench', '--json', '--endpoint', `grpc://${d.address}`, '--instance', 'bench/x', ...TINY_FLAGS, '--repeat', '2'], { reject: false });
      expect(res.exitCode, res.stderr).toBe(0);
      const r = JSON.parse(res.stdout) as BenchResult;
      expectConsistent(r, 2, ['cas-small', 'cas-large', 'ac', 'exec']);
      expect(r.target).toMatchObject({ kind: 'endpoint', endpoint: `grpc://${d.address}`, instance: 'bench/x', tls: false, token: false });
      expect(res.stderr).toMatch(/^cas-large 5\/10: 1MiB ×2 at concurrency 2, repetition 1\/2/m);

      // The 2 MiB blobs of the run (plus the warm-up one) are files in the other daemon's store.
      const sizes: number[] = [];
      const walk = (p: string): void => {
        for (const e of readdirSync(p, { withFileTypes: true })) {
          if (e.isDirectory()) walk(join(p, e.name));
          else sizes.push(statSync(join(p, e.name)).size);
        }
      };
      walk(join(d.dataDir, 'blobs'));
      expect(sizes.filter((n) => n === 2 * MiB).length).toBe(3);
      // And it ran the actions: the no-op ones, the staging ones and the compiles, each warm-up too.
      const ops = await call<unknown, { operations: unknown[] }>(d.clients.operations, 'ListOperations', { name: '', pageSize: 1000 });
      expect(ops.operations.length).toBe(8 + 8 + (hasGcc ? 8 + 1 : 0) + 1);
    });

    it('history is unsupported against an endpoint (it needs daemons of its own, history on and off)', async () => {
      const r = await runBench({ ...DEFAULT_BENCH_OPTIONS, ...TINY, suites: ['history'], endpoint: d.address, progress: new BenchProgress({ write: () => undefined }, { tty: false }) });
      expect(suite(r, 'history')).toMatchObject({ status: 'unsupported', unsupported: [{ what: 'history', reason: expect.stringContaining('without --endpoint or --local') }] });
    });

    it('--compare shows the change of every metric both runs measured', { timeout: 120_000 }, async () => {
      const args = [BIN, 'bench', '--endpoint', d.address, ...TINY_FLAGS, '--repeat', '1'];
      const first = await execa(process.execPath, [...args, '--suite', 'cas-small,ac', '--json'], { reject: false });
      expect(first.exitCode, first.stderr).toBe(0);
      const file = join(dir, 'first.json');
      writeFileSync(file, first.stdout);

      const second = await execa(process.execPath, [...args, '--suite', 'cas-small,ac', '--json', '--compare', file], { reject: false });
      expect(second.exitCode, second.stderr).toBe(0);
      const r = JSON.parse(second.stdout) as BenchResult;
      expect(validateBenchResult(r)).toEqual([]);
      const before = JSON.parse(first.stdout) as BenchResult;
      const c = r.comparison!;
      expect(c.file).toBe(file);
      expect(c.startedAt).toBe(before.startedAt);
      expect(c.rows.map((row) => row.id)).toEqual(r.suites.flatMap(metricIds));
      expect(c.onlyBefore).toEqual([]);
      for (const row of c.rows) {
        const old = before.suites.flatMap((s) => s.metrics).find((m) => m.id === row.id)!;
        expect(row.before).toBe(old.value);
        expect(row.change).toBeCloseTo(row.after / row.before - 1, 9);
        expect(row.ratioChange!).toBeCloseTo(row.ratioAfter! / row.ratioBefore! - 1, 9);
        expect(['better', 'worse', 'same']).toContain(row.verdict);
      }

      const table = await execa(process.execPath, [...args, '--suite', 'ac', '--compare', file], { reject: false });
      expect(table.exitCode, table.stderr).toBe(0);
      expect(table.stdout).toContain(`compared with ${file}`);
      expect(table.stdout).toMatch(/ac\/update-latency\/c1\s+[\d.,]+\s+[\d.,]+\s+ms\s+[+-][\d.]+%/);
      // This run measured ac only: the earlier run's cas-small metrics are listed as missing.
      expect(table.stdout).toMatch(/only in the earlier run: cas-small\/batch-update\/100B\/c1/);
    });

    it('refuses a --compare file that is not a bench result', async () => {
      const bad = join(dir, 'bad.json');
      writeFileSync(bad, JSON.stringify({ format: 'reexec-bench/1', suites: 3 }));
      const res = await execa(process.execPath, [BIN, 'bench', '--endpoint', d.address, '--compare', bad], { reject: false });
      expect(res.exitCode).toBe(2);
      expect(res.stderr).toMatch(/not a reexec bench result \(\$: lacks "host"/);
    });

    it('refuses an endpoint it cannot reach, and a malformed one, with exit code 2', async () => {
      const down = await execa(process.execPath, [BIN, 'bench', '--endpoint', 'grpc://127.0.0.1:1', '--suite', 'cas-small', '--repeat', '1'], { reject: false });
      expect(down.exitCode).toBe(2);
      expect(down.stderr).toMatch(/cannot use grpc:\/\/127\.0\.0\.1:1/);
      const bad = await execa(process.execPath, [BIN, 'bench', '--endpoint', 'not an address'], { reject: false });
      expect(bad.exitCode).toBe(2);
      expect(bad.stderr).toMatch(/--endpoint "not an address"/);
    });

    it('--local reaches the daemon through the listen address of the config', { timeout: 60_000 }, async () => {
      const config = join(dir, 'config.yaml');
      writeFileSync(config, `listen: ["${d.address}"]\ndata-dir: ${join(dir, 'unused')}\n`);
      const res = await execa(process.execPath, [BIN, 'bench', '--local', '--config', config, '--suite', 'ac', '--ac-calls', '3', '--concurrency', '1', '--repeat', '1', '--json'], { reject: false });
      expect(res.exitCode, res.stderr).toBe(0);
      const r = JSON.parse(res.stdout) as BenchResult;
      expect(r.target).toMatchObject({ kind: 'local', config });
      expect(r.target.endpoint.replace(/^grpc:\/\//, '')).toBe(d.address);
      expect(suite(r, 'ac').checks).toMatchObject({ updates: 3, hits: 3 });
    });
  });

  describe('what an endpoint does not offer is reported as unsupported, not as a failure', () => {
    it('exec against a daemon with execution off', { timeout: 60_000 }, async () => {
      const d = await startTestDaemon((c) => (c.execution.enabled = false));
      try {
        const res = await execa(process.execPath, [BIN, 'bench', '--endpoint', d.address, '--suite', 'ac,exec', '--ac-calls', '3', '--concurrency', '1', '--repeat', '1', '--json'], { reject: false });
        expect(res.exitCode, res.stderr).toBe(0);
        const r = JSON.parse(res.stdout) as BenchResult;
        expect(validateBenchResult(r)).toEqual([]);
        expect(suite(r, 'ac').status).toBe('ok');
        expect(suite(r, 'exec')).toMatchObject({ status: 'unsupported', metrics: [], unsupported: [{ what: 'exec', reason: 'GetCapabilities says exec_enabled is false' }] });
        const table = await execa(process.execPath, [BIN, 'bench', '--endpoint', d.address, '--suite', 'exec', '--repeat', '1'], { reject: false });
        expect(table.exitCode).toBe(0);
        expect(table.stdout).toMatch(/^exec \(unsupported\)$/m);
        expect(table.stdout).toMatch(/^unsupported: exec: GetCapabilities says exec_enabled is false$/m);
      } finally {
        await d.stop();
      }
    });

    it('every suite against a server that implements nothing but GetCapabilities', { timeout: 60_000 }, async () => {
      const server = createGrpcServer({ maxReceiveMessageBytes: 4 * MiB, flowControlWindowBytes: 1 * MiB });
      server.addService(capabilitiesDefinition, {
        GetCapabilities: (_call: unknown, cb: grpc.sendUnaryData<unknown>) =>
          cb(null, { cacheCapabilities: { digestFunctions: [1], actionCacheUpdateCapabilities: { updateEnabled: true } }, executionCapabilities: { execEnabled: true, digestFunction: 1 } }),
      });
      const address = await bindAddress(server, '127.0.0.1:0');
      try {
        const res = await execa(process.execPath, [BIN, 'bench', '--endpoint', address, ...TINY_FLAGS, '--repeat', '1', '--json'], { reject: false });
        expect(res.exitCode, res.stderr).toBe(0);
        const r = JSON.parse(res.stdout) as BenchResult;
        expect(validateBenchResult(r)).toEqual([]);
        expect(r.suites.map((s) => [s.name, s.status, s.metrics.length])).toEqual([
          ['cas-small', 'unsupported', 0],
          ['cas-large', 'unsupported', 0],
          ['ac', 'unsupported', 0],
          ['exec', 'unsupported', 0],
        ]);
        for (const s of r.suites) expect(s.unsupported[0]!.reason).toMatch(/UNIMPLEMENTED/);
      } finally {
        server.forceShutdown();
      }
    });
  });

  it('reaches a grpcs:// endpoint with mutual TLS and a token; a read-only token leaves UpdateActionResult unsupported', { timeout: 90_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'reexec-bench-tls-'));
    const tls = await createTlsSetup(join(dir, 'tls'), { listen: ['127.0.0.1:0'] });
    const d = await startTestDaemon((c) => {
      c.tls = { cert: tls.serverCert, key: tls.serverKey, clientCa: tls.caCert };
      c.auth = { tokenFile: tls.tokenFile, anonymous: [], localUsers: [] };
    });
    try {
      const args = (token: string) => [
        BIN, 'bench', '--endpoint', `grpcs://${d.address}`, '--server-cert', tls.caCert, '--client-cert', tls.clientCert, '--client-key', tls.clientKey,
        '--token', token, '--suite', 'ac', '--ac-calls', '3', '--concurrency', '1', '--repeat', '1', '--json',
      ];
      const res = await execa(process.execPath, args(tls.tokens.client.token), { reject: false });
      expect(res.exitCode, res.stderr).toBe(0);
      const r = JSON.parse(res.stdout) as BenchResult;
      expect(r.target).toMatchObject({ kind: 'endpoint', tls: true, token: true });
      expect(suite(r, 'ac')).toMatchObject({ status: 'ok', checks: { updates: 3, hits: 3 } });

      const ro = await execa(process.execPath, args(tls.tokens.readOnly.token), { reject: false });
      expect(ro.exitCode, ro.stderr).toBe(0);
      const ac = suite(JSON.parse(ro.stdout) as BenchResult, 'ac');
      expect(ac.status).toBe('partial');
      expect(ac.unsupported.map((u) => u.what)).toEqual(['UpdateActionResult']);
      expect(ac.metrics.map((m) => m.name)).toEqual(['get-miss-latency']);
      expect(ac.checks).toMatchObject({ updates: 0, misses: 3 });

      // Without TLS the certificate flags make no sense.
      const plain = await execa(process.execPath, [BIN, 'bench', '--endpoint', d.address, '--server-cert', tls.caCert], { reject: false });
      expect(plain.exitCode).toBe(2);
      expect(plain.stderr).toMatch(/write the endpoint as grpcs:\/\//);
    } finally {
      await d.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the schema refuses what is not a bench result', () => {
    const r: BenchResult = {
      format: 'reexec-bench/1',
      host: { cpus: 2, cpuModel: 'x', node: 'v20', platform: 'linux', arch: 'x64', totalMemBytes: 1, loadAvg: [1, 1, 1] },
      target: { kind: 'endpoint', endpoint: 'h:1', instance: '', tls: false, token: false, note: '' },
      startedAt: 'now',
      durationSeconds: 1,
      repeat: 1,
      concurrency: [1],
      baselines: '',
      suites: [
        {
          name: 'ac',
          status: 'ok',
          unsupported: [],
          params: { ops: 1, concurrency: [1] },
          checks: { updates: 1 },
          metrics: [{ id: 'ac/update/c1', name: 'update', label: 'u', concurrency: 1, value: 2, unit: 'calls/s', better: 'higher', baseline: null, ratio: null, samples: [2], baselineSamples: [] }],
        },
      ],
    };
    expect(validateBenchResult(r)).toEqual([]);
    const broken = structuredClone(r) as any;
    broken.suites[0].metrics[0].better = 'faster';
    broken.suites[0].metrics[0].ratio = 'high';
    broken.target.kind = 'nowhere';
    delete broken.repeat;
    expect(validateBenchResult(broken)).toEqual([
      '$: lacks "repeat"',
      expect.stringMatching(/^\$\.target: matches none of the allowed forms/),
      '$.suites[0].metrics[0].better: is "faster", expected one of ["higher","lower"]',
      '$.suites[0].metrics[0].ratio: is string, expected number or null',
    ]);
    // A comparison of a run with itself: every metric the same.
    const c = compareResults(r, r, 'self.json');
    expect(c.rows).toMatchObject([{ id: 'ac/update/c1', change: 0, ratioChange: null, verdict: 'same' }]);
  });

  it('progress: a bar redrawn in place on a terminal, one line a step elsewhere', () => {
    const tty: string[] = [];
    const p = new BenchProgress({ write: (t: string) => tty.push(t), isTTY: true, columns: 200 }, { suites: 2 });
    const s = p.suite('cas-small', 4);
    s.step('first step');
    p.info('a line above the bar');
    s.step('second step');
    p.done();
    const screen = tty.join('');
    expect(screen).toContain('\r\x1b[2Kcas-small (1/2) [##########..........] 2/4');
    expect(screen).toContain('second step');
    expect(screen).toContain('a line above the bar\n');
    expect(screen.endsWith('\r\x1b[2K')).toBe(true);

    const plain: string[] = [];
    const q = new BenchProgress({ write: (t: string) => plain.push(t) }, { tty: false });
    q.suite('ac', 2).step('done one');
    expect(plain).toEqual(['ac 1/2: done one\n']);
  });

  it('the no-op program is a static executable that exits 0 (x64 and arm64)', async () => {
    for (const arch of ['x64', 'arm64']) {
      const elf = exitZeroElf(arch)!;
      expect(elf.subarray(0, 4)).toEqual(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
      expect(elf.readUInt16LE(18)).toBe(arch === 'x64' ? 0x3e : 0xb7);
      expect(elf.byteLength).toBeLessThan(200);
    }
    expect(exitZeroElf('mips')).toBeUndefined();
    if (process.arch !== 'x64' && process.arch !== 'arm64') return;
    const dir = mkdtempSync(join(tmpdir(), 'reexec-elf-'));
    try {
      const path = join(dir, 'true');
      writeFileSync(path, exitZeroElf()!, { mode: 0o755 });
      expect((await execa(path, { reject: false })).exitCode).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
