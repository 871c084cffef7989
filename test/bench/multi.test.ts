import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMultiBench } from '../../src/bench/multi.js';
import { BenchProgress } from '../../src/bench/progress.js';
import { formatMultiReport } from '../../src/bench/report.js';
import { validateBenchResult } from '../../src/bench/result-schema.js';
import { DEFAULT_BENCH_OPTIONS } from '../../src/bench/run-bench.js';
import { parseTargets, perTarget, TargetArgError, tokenEnvName } from '../../src/bench/targets.js';
import type { MultiBenchResult } from '../../src/bench/types.js';
import { createTlsSetup } from '../../src/host/tls-setup.js';
import { findBubblewrap } from '../../src/runner/bubblewrap-runner.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';

const BIN = fileURLToPath(new URL('../../bin/run.js', import.meta.url));
const noBwrap = findBubblewrap() ? undefined : 'bubblewrap (apt-get install bubblewrap)';

/** Tiny sizes: what is measured and reported, not speed. */
const TINY = { concurrency: [1], blobSizes: [100], blobsPerBatch: 10, batches: 2, acOps: 3, actions: 2, stagingFiles: 20, compiles: 1 };
const quiet = () => new BenchProgress({ write: () => undefined }, { tty: false });

describe('reexec bench with several targets: the flags', () => {
  it('--endpoint values in order after --local, labelled NAME=ADDRESS or by their address; "temporary" is the bench\'s own daemon', () => {
    expect(parseTargets([], false)).toEqual([{ label: 'temporary', kind: 'temporary' }]);
    expect(parseTargets([], true)).toEqual([{ label: 'local', kind: 'local' }]);
    expect(parseTargets(['casd=grpc://127.0.0.1:5000', 'unix:/run/a=b.sock', 'ours=temporary', 'host:1'], true)).toEqual([
      { label: 'local', kind: 'local' },
      { label: 'casd', kind: 'endpoint', endpoint: 'grpc://127.0.0.1:5000' },
      { label: 'unix:/run/a=b.sock', kind: 'endpoint', endpoint: 'unix:/run/a=b.sock' },
      { label: 'ours', kind: 'temporary' },
      { label: 'host:1', kind: 'endpoint', endpoint: 'host:1' },
    ]);
    expect(() => parseTargets(['a=h:1', 'a=h:2'], false)).toThrow(TargetArgError);
    expect(() => parseTargets(['h:1', 'h:1'], false)).toThrow(/two targets are called "h:1"/);
  });

  it('per-endpoint flags: NAME=VALUE for one endpoint, a bare value for every other; a token may end in "="', () => {
    const targets = parseTargets(['a=h:1', 'b=h:2', 'c=temporary'], true);
    expect([...perTarget('--token', ['a=tokA==', 'shared='], targets)]).toEqual([
      ['a', 'tokA=='],
      ['b', 'shared='],
    ]);
    // "x" is no label: the whole value is the token, for every endpoint.
    expect([...perTarget('--token', ['x=y'], targets)]).toEqual([
      ['a', 'x=y'],
      ['b', 'x=y'],
    ]);
    expect(() => perTarget('--token', ['one', 'two'], targets)).toThrow(/given twice without a label: write --token NAME=VALUE, NAME being an --endpoint label \(a, b\)/);
    expect(() => perTarget('--token', ['a=1', 'a=2'], targets)).toThrow(/--token given twice for "a"/);
    expect(() => perTarget('--server-cert', ['local=ca.pem'], targets)).toThrow(/"local" is not an --endpoint target/);
    expect(() => perTarget('--token', ['t'], parseTargets([], true))).toThrow(/--token needs an --endpoint/);
    expect(tokenEnvName('casd-1.4')).toBe('REEXEC_TOKEN_CASD_1_4');
  });

  it('refuses --compare with several targets, and two targets of one name, with exit code 2', async () => {
    const compare = await execa(process.execPath, [BIN, 'bench', '--endpoint', 'a=127.0.0.1:1', '--endpoint', 'b=127.0.0.1:2', '--compare', 'x.json'], { reject: false });
    expect(compare.exitCode).toBe(2);
    expect(compare.stderr).toMatch(/--compare compares a run against one endpoint/);
    const twice = await execa(process.execPath, [BIN, 'bench', '--endpoint', 'a=127.0.0.1:1', '--endpoint', 'a=127.0.0.1:2'], { reject: false });
    expect(twice.exitCode).toBe(2);
    expect(twice.stderr).toMatch(/two targets are called "a"/);
  });
});

describe('reexec bench with several targets against real daemons', () => {
  let on: TestDaemon;
  let off: TestDaemon;
  beforeAll(async () => {
    on = await startTestDaemon();
    off = await startTestDaemon((c) => (c.execution.enabled = false));
  });
  afterAll(async () => {
    await on?.stop();
    await off?.stop();
  });

  it.skipIf(noBwrap)(
    'runs every suite on each endpoint in turn, repetition by repetition, and sets them side by side; what one lacks is unsupported in its column',
    { timeout: 240_000 },
    async () => {
      const lines: string[] = [];
      const r = await runMultiBench({
        ...DEFAULT_BENCH_OPTIONS,
        ...TINY,
        suites: ['cas-small', 'exec'],
        repeat: 2,
        targets: [
          { label: 'exec-on', spec: { endpoint: on.address } },
          { label: 'exec-off', spec: { endpoint: `grpc://${off.address}` } },
        ],
        progress: new BenchProgress({ write: (t: string) => lines.push(t) }, { tty: false }),
      });
      // A B A B: each repetition runs each suite on every endpoint before the next suite.
      expect(r.order.map((o) => `${o.repetition} ${o.suite} ${o.endpoint}`)).toEqual([
        '1 cas-small exec-on',
        '1 cas-small exec-off',
        '1 exec exec-on',
        '1 exec exec-off',
        '2 cas-small exec-on',
        '2 cas-small exec-off',
        '2 exec exec-on',
        '2 exec exec-off',
      ]);
      expect(lines.join('')).toMatch(/^exec @ exec-on \(repetition 2\/2\) 1\/\d+: 2 no-op actions at concurrency 1/m);
      expect(r.endpoints.map((e) => e.label)).toEqual(['exec-on', 'exec-off']);
      // Each endpoint's own result is a complete single-endpoint result, both repetitions merged.
      for (const e of r.endpoints) {
        expect(validateBenchResult(JSON.parse(JSON.stringify(e.result)))).toEqual([]);
        expect(e.result.repeat).toBe(2);
        for (const s of e.result.suites) for (const m of s.metrics) expect(m.samples, `${e.label} ${m.id}`).toHaveLength(2);
      }
      const [a, b] = r.endpoints;
      expect(a!.result.target).toMatchObject({ kind: 'endpoint', endpoint: on.address });
      expect(a!.result.suites.map((s) => [s.name, s.status === 'unsupported'])).toEqual([
        ['cas-small', false],
        ['exec', false],
      ]);
      expect(b!.result.suites.find((s) => s.name === 'exec')).toMatchObject({ status: 'unsupported', unsupported: [{ what: 'exec', reason: 'GetCapabilities says exec_enabled is false' }] });
      // The blobs really went to each daemon: 2 repetitions × 2 batches × 10 blobs, all read back.
      for (const e of r.endpoints) expect(e.result.suites[0]!.checks).toMatchObject({ blobsUploaded: 40, uploadErrors: 0, blobsReadMatching: 40 });

      const row = (id: string) => r.rows.find((x) => x.id === id)!;
      const update = row('cas-small/batch-update/100B/c1');
      expect(update.cells.map((c) => c.status)).toEqual(['measured', 'measured']);
      expect(update.cells[0]!.ratioToFirst).toBeNull();
      expect(update.cells[1]!.ratioToFirst!).toBeCloseTo(update.cells[1]!.value! / update.cells[0]!.value!, 9);
      const aUpdate = a!.result.suites[0]!.metrics.find((m) => m.id === update.id)!;
      expect(update.cells[0]).toMatchObject({ value: aUpdate.value, baselineRatio: aUpdate.ratio });
      const noop = row('exec/noop-latency/c1');
      expect(noop.cells.map((c) => c.status)).toEqual(['measured', 'unsupported']);
      expect(noop.cells[1]).toMatchObject({ value: null, ratioToFirst: null });
      // Every metric either endpoint measured has a row, and no row twice.
      const ids = r.endpoints.flatMap((e) => e.result.suites.flatMap((s) => s.metrics.map((m) => m.id)));
      expect(r.rows.map((x) => x.id).sort()).toEqual([...new Set(ids)].sort());

      const table = formatMultiReport(r);
      expect(table).toMatch(/^metric\s+unit\s+exec-on\s+exec-off\s+exec-off\/exec-on$/m);
      expect(table).toMatch(/^cas-small\/batch-update\/100B\/c1\s+blobs\/s\s+[\d,.]+ \([\d.]+×\)\s+[\d,.]+ \([\d.]+×\)\s+[\d.]+×$/m);
      expect(table).toMatch(/^exec\/noop-latency\/c1\s+ms\s+[\d,.]+ \([\d.]+×\)\s+unsupported\s+n\/a$/m);
      expect(table).toMatch(/^unsupported on exec-off: exec: exec: GetCapabilities says exec_enabled is false$/m);
      expect(table).toMatch(/each repetition runs every suite on exec-on, then exec-off/);
    },
  );

  it('the CLI: --local next to --endpoint, labels, one table, and --json with the same data', { timeout: 120_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'reexec-bench-multi-'));
    try {
      // --local finds the daemon through the config's listen address.
      const config = join(dir, 'config.yaml');
      writeFileSync(config, `listen: ["${on.address}"]\n`);
      const args = [BIN, 'bench', '--config', config, '--local', '--endpoint', `other=grpc://${off.address}`, '--suite', 'ac', '--ac-calls', '3', '--concurrency', '1', '--repeat', '2'];
      const json = await execa(process.execPath, [...args, '--json'], { reject: false, env: { REEXEC_TOKEN: '' } });
      expect(json.exitCode, json.stderr).toBe(0);
      const r = JSON.parse(json.stdout) as MultiBenchResult;
      expect(r.format).toBe('reexec-bench-multi/1');
      expect(r.endpoints.map((e) => [e.label, e.result.target.kind, e.result.target.endpoint])).toEqual([
        ['local', 'local', `grpc://${on.address}`],
        ['other', 'endpoint', `grpc://${off.address}`],
      ]);
      expect(r.order.map((o) => o.endpoint)).toEqual(['local', 'other', 'local', 'other']);
      for (const e of r.endpoints) expect(e.result.suites[0]!.checks).toMatchObject({ updates: 6, hits: 6, misses: 6 });
      expect(r.rows.map((x) => x.id)).toContain('ac/get-hit-latency/c1');

      const text = await execa(process.execPath, args, { reject: false, env: { REEXEC_TOKEN: '' } });
      expect(text.exitCode, text.stderr).toBe(0);
      expect(text.stdout).toMatch(/^metric\s+unit\s+local\s+other\s+other\/local$/m);
      expect(text.stdout).toMatch(/^ac\/update\/c1\s+calls\/s\s+[\d,.]+ \([\d.]+×\)\s+[\d,.]+ \([\d.]+×\)\s+[\d.]+×$/m);
      expect(text.stdout).toMatch(new RegExp(`^other: grpc://${off.address.replace(/\./g, '\\.')}: an external server`, 'm'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

it('each endpoint its own TLS files and token (NAME=VALUE flags, REEXEC_TOKEN_<NAME>)', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'reexec-bench-multi-tls-'));
  const a = await createTlsSetup(join(dir, 'a'), { listen: ['127.0.0.1:0'] });
  const b = await createTlsSetup(join(dir, 'b'), { listen: ['127.0.0.1:0'] });
  const da = await startTestDaemon((c) => {
    c.tls = { cert: a.serverCert, key: a.serverKey, clientCa: a.caCert };
    c.auth = { tokenFile: a.tokenFile, anonymous: [], localUsers: [] };
  });
  const db = await startTestDaemon((c) => {
    c.tls = { cert: b.serverCert, key: b.serverKey, clientCa: null };
    c.auth = { tokenFile: b.tokenFile, anonymous: [], localUsers: [] };
  });
  try {
    const args = [
      BIN, 'bench', '--endpoint', `a=grpcs://${da.address}`, '--endpoint', `b=grpcs://${db.address}`,
      '--server-cert', `a=${a.caCert}`, '--server-cert', `b=${b.caCert}`, '--client-cert', `a=${a.clientCert}`, '--client-key', `a=${a.clientKey}`,
      '--token', `a=${a.tokens.client.token}`, '--suite', 'ac', '--ac-calls', '3', '--concurrency', '1', '--repeat', '1', '--json',
    ];
    // b's token from the environment; b's read-only token leaves its updates unsupported, a's column is whole.
    const res = await execa(process.execPath, args, { reject: false, env: { [tokenEnvName('b')]: b.tokens.readOnly.token, REEXEC_TOKEN: '' } });
    expect(res.exitCode, res.stderr).toBe(0);
    const r = JSON.parse(res.stdout) as MultiBenchResult;
    expect(r.endpoints.map((e) => e.result.target)).toMatchObject([
      { kind: 'endpoint', tls: true, token: true },
      { kind: 'endpoint', tls: true, token: true },
    ]);
    expect(r.endpoints[0]!.result.suites[0]).toMatchObject({ status: 'ok', checks: { updates: 3, hits: 3 } });
    expect(r.endpoints[1]!.result.suites[0]).toMatchObject({ status: 'partial', unsupported: [{ what: 'UpdateActionResult' }], checks: { updates: 0, misses: 3 } });
    const update = r.rows.find((x) => x.id === 'ac/update/c1')!;
    expect(update.cells.map((c) => c.status)).toEqual(['measured', 'unsupported']);

    // Without b's token it cannot even ask b what it offers: the run says which endpoint and stops.
    const noToken = await execa(process.execPath, args, { reject: false, env: { REEXEC_TOKEN: '' } });
    expect(noToken.exitCode, noToken.stderr + noToken.stdout.slice(0, 3000)).toBe(2);
    expect(noToken.stdout + noToken.stderr).toMatch(new RegExp(`cannot use grpcs://${db.address.replace(/\./g, '\\.')}`));
  } finally {
    await da.stop();
    await db.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
