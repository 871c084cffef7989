import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { call, type ReapiClients } from '../client/reapi-client.js';
import { Digest } from '../digest/digest.js';
import { re, type longrunning, type protobuf } from '../proto.js';
import { uploadName, byteStreamWrite } from './cas-large.js';
import { BWRAP_BASELINE_ARGS, bwrapProblem, findCommand, run } from './host-baselines.js';
import { makeMetric } from './metric.js';
import { formatNumber, median, runConcurrent, timed } from './stats.js';
import { unsupportedReason, UnsupportedError, type SuiteProgress } from './support.js';
import { exitZeroElf } from './tiny-elf.js';
import type { Metric, SuiteResult, Unsupported } from './types.js';
import { setProtoTimeToMs } from '../util/proto-time.js';

const SHA256_VALUE = 1;
const FILES_PER_DIRECTORY = 100;
/** Longest an Execute may take before the bench gives up on the endpoint. */
const EXECUTE_DEADLINE_MS = 10 * 60 * 1000;

export interface ExecOptions {
  clients: ReapiClients;
  instance: string;
  /** GetCapabilities' execution_capabilities.exec_enabled, and what it said when false. */
  execEnabled: boolean;
  execDisabledReason?: string;
  /** The endpoint's max_batch_total_size_bytes (0: none stated). */
  maxBatchBytes: number;
  concurrency: number[];
  repeat: number;
  /** No-op actions per concurrency and repetition. */
  actions: number;
  /** Files of the staging input root (10,000 by default). */
  stagingFiles: number;
  /** Compile actions per concurrency and repetition. */
  compiles: number;
  /** Where the local baselines write their files. */
  disk: { dir: string; where: string };
  progress: SuiteProgress;
}

export function execSteps(o: Pick<ExecOptions, 'concurrency' | 'repeat'>): number {
  return o.concurrency.length * o.repeat * 2 + 2 * o.repeat;
}

// ---------------------------------------------------------------------------------------------
// Input roots in memory, as REAPI Directory messages.

interface TreeDir {
  files: Array<{ name: string; data: Buffer; executable?: boolean }>;
  dirs: Array<{ name: string; dir: TreeDir }>;
  properties?: Array<{ name: string; value: string }>;
}

type Blob = { digest: Digest; data: Uint8Array };

const byName = <T extends { name: string }>(a: T, b: T): number => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name));

/** The Directory messages and file blobs of a tree: its root digest and every blob by key. */
export function encodeTree(root: TreeDir): { root: Digest; blobs: Map<string, Blob> } {
  const blobs = new Map<string, Blob>();
  const add = (data: Uint8Array): Digest => {
    const digest = Digest.compute(data);
    blobs.set(digest.key, { digest, data });
    return digest;
  };
  const encode = (dir: TreeDir): Digest => {
    const msg: re.IDirectory = {
      files: [...dir.files].sort(byName).map((f) => ({ name: f.name, digest: add(f.data).toProto(), isExecutable: !!f.executable })),
      directories: [...dir.dirs].sort(byName).map((d) => ({ name: d.name, digest: encode(d.dir).toProto() })),
      symlinks: [],
    };
    if (dir.properties?.length) msg.nodeProperties = { properties: dir.properties };
    return add(re.Directory.encode(msg).finish());
  };
  return { root: encode(root), blobs };
}

/** Upload what the endpoint lacks: batches within its limit, larger blobs through ByteStream. */
export async function uploadBlobs(clients: ReapiClients, instance: string, blobs: Iterable<Blob>, maxBatchBytes: number): Promise<void> {
  const all = [...blobs];
  const missing = new Set<string>();
  for (let i = 0; i < all.length; i += 10_000) {
    const res = await call<unknown, re.IFindMissingBlobsResponse>(clients.cas, 'FindMissingBlobs', {
      instanceName: instance,
      blobDigests: all.slice(i, i + 10_000).map((b) => b.digest.toProto()),
      digestFunction: SHA256_VALUE,
    });
    for (const d of res.missingBlobDigests ?? []) missing.add(`${d.hash}/${d.sizeBytes}`);
  }
  const todo = all.filter((b) => missing.has(`${b.digest.hash}/${b.digest.sizeBytes}`));
  const limit = (maxBatchBytes > 0 ? maxBatchBytes : 4 * 1024 * 1024) - 1024;
  let batch: Blob[] = [];
  let bytes = 0;
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    const res = await call<unknown, re.IBatchUpdateBlobsResponse>(clients.cas, 'BatchUpdateBlobs', {
      instanceName: instance,
      requests: batch.map((b) => ({ digest: b.digest.toProto(), data: b.data })),
      digestFunction: SHA256_VALUE,
    });
    const failed = (res.responses ?? []).find((r) => (r.status?.code ?? 0) !== 0);
    if (failed) throw new Error(`uploading the exec suite's inputs failed: ${failed.status?.message ?? `code ${failed.status?.code}`}`);
    batch = [];
    bytes = 0;
  };
  for (const b of todo) {
    const size = b.data.byteLength + 100;
    if (size > limit) {
      await byteStreamWrite(clients, uploadName(instance, b.digest.hash, b.data.byteLength), Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength), 1024 * 1024);
      continue;
    }
    if (bytes + size > limit || batch.length >= 1000) await flush();
    batch.push(b);
    bytes += size;
  }
  await flush();
}

export interface ActionSpec {
  args: string[];
  outputPaths?: string[];
  platform?: Array<[string, string]>;
}

/**
 * One Action per salt (the salt goes into the environment, so every action is distinct and
 * none joins another in flight), all not to be cached: every Execute runs.
 */
export async function uploadActions(o: Pick<ExecOptions, 'clients' | 'instance' | 'maxBatchBytes'>, root: Digest, spec: ActionSpec, salts: string[]): Promise<Digest[]> {
  const platform = { properties: (spec.platform ?? []).map(([name, value]) => ({ name, value })).sort(byName) };
  const blobs: Blob[] = [];
  const digests = salts.map((salt) => {
    const command = re.Command.encode({
      arguments: spec.args,
      environmentVariables: [
        { name: 'PATH', value: '/usr/bin:/bin' },
        { name: 'REEXEC_BENCH', value: salt },
      ],
      outputPaths: spec.outputPaths ?? [],
      platform,
    }).finish();
    const commandDigest = Digest.compute(command);
    const action = re.Action.encode({ commandDigest: commandDigest.toProto(), inputRootDigest: root.toProto(), platform, doNotCache: true }).finish();
    const actionDigest = Digest.compute(action);
    blobs.push({ digest: commandDigest, data: command }, { digest: actionDigest, data: action });
    return actionDigest;
  });
  await uploadBlobs(o.clients, o.instance, blobs, o.maxBatchBytes);
  return digests;
}

/** An Execute stream to its end: the ExecuteResponse of its last Operation. */
export function execute(clients: ReapiClients, instance: string, actionDigest: Digest, extra: Partial<re.IExecuteRequest> = {}): Promise<re.ExecuteResponse> {
  return new Promise((resolve, reject) => {
    let last: longrunning.Operation | undefined;
    const stream = clients.execution['Execute']!(
      { instanceName: instance, actionDigest: actionDigest.toProto(), skipCacheLookup: true, digestFunction: SHA256_VALUE, ...extra },
      new grpc.Metadata(),
      { deadline: new Date(Date.now() + EXECUTE_DEADLINE_MS) },
    ) as grpc.ClientReadableStream<longrunning.Operation>;
    stream.on('data', (op: longrunning.Operation) => (last = op));
    stream.on('error', reject);
    stream.on('end', () => {
      if (last?.error && last.error.code) {
        reject(Object.assign(new Error(last.error.message ?? ''), { code: last.error.code, details: last.error.message ?? '' }));
      } else if (!last?.done || !last.response) reject(new Error(`Execute of ${actionDigest} ended without a finished operation`));
      else resolve(re.ExecuteResponse.decode(last.response.value ?? new Uint8Array()));
    });
  });
}

const tsMs = (t: protobuf.ITimestamp | null | undefined): number | undefined => setProtoTimeToMs(t);

/** Input staging as the server reports it (ExecutedActionMetadata), in ms, if it does. */
export function serverStagingMs(r: re.IExecuteResponse): number | undefined {
  const m = r.result?.executionMetadata;
  const start = tsMs(m?.inputFetchStartTimestamp);
  const end = tsMs(m?.inputFetchCompletedTimestamp);
  return start !== undefined && end !== undefined ? end - start : undefined;
}

export const succeeded = (r: re.IExecuteResponse | undefined): boolean => !!r && (r.status?.code ?? 0) === 0 && !!r.result && (r.result.exitCode ?? 0) === 0;

/** Why a response is not a success, with the action's stderr when the server inlined it. */
function failure(r: re.IExecuteResponse): string {
  if ((r.status?.code ?? 0) !== 0) return `status ${r.status?.code}: ${r.status?.message ?? ''}`;
  const stderr = r.result?.stderrRaw ? Buffer.from(r.result.stderrRaw).toString().trim().slice(-500) : '';
  return `exit code ${r.result?.exitCode}${stderr ? `: ${stderr}` : ''}`;
}

// ---------------------------------------------------------------------------------------------

/** The no-op program for the endpoint's sandbox: the tiny ELF, or a static busybox (as `true`). */
export function noopProgram(): { data: Buffer; what: string } | undefined {
  const elf = exitZeroElf();
  if (elf) return { data: elf, what: `a ${elf.byteLength}-byte static ELF that calls exit_group(0)` };
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p) && statSync(p).size < 8 * 1024 * 1024);
  return busybox ? { data: readFileSync(busybox), what: `${busybox} (run as true)` } : undefined;
}

/** A small C file that takes gcc -O2 a moment: arithmetic in a few dozen functions. */
export function compileSource(functions = 40): string {
  const lines = ['/* reexec bench: a compile-like action */', 'typedef unsigned long long u64;'];
  for (let i = 0; i < functions; i++) {
    lines.push(
      `static u64 mix${i}(u64 x) {`,
      `  for (int i = 0; i < ${16 + i}; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x += (u64)i * ${2 * i + 1}u; }`,
      `  return x${i > 0 ? ` ^ mix${i - 1}(x >> 3)` : ''};`,
      '}',
    );
  }
  lines.push(`u64 bench_entry(u64 x) { return mix${functions - 1}(x); }`, '');
  return lines.join('\n');
}

/** The local baseline of staging: the same files written into a fresh directory here. */
async function writeTreeLocally(dir: TreeDir, path: string): Promise<void> {
  await mkdir(path);
  await Promise.all(dir.files.map((f) => writeFile(join(path, f.name), f.data, { mode: f.executable ? 0o755 : 0o644 })));
  for (const d of dir.dirs) await writeTreeLocally(d.dir, join(path, d.name));
}

/**
 * Remote execution end to end: a no-op action's latency and actions/s at each concurrency,
 * next to the raw `bwrap … /bin/true` spawn with the same concurrency; input-root staging of
 * a many-file input root the first time and again, as a read-only subtree (the server may
 * cache it) and writable; and a small gcc compile in reexec's host-tools sandbox next to the
 * same gcc run here.
 */
export async function runExec(o: ExecOptions): Promise<SuiteResult> {
  const unsupportedSuite = (what: string, reason: string): SuiteResult => ({ name: 'exec', status: 'unsupported', unsupported: [{ what, reason }], params: {}, metrics: [], checks: {} });
  if (!o.execEnabled) return unsupportedSuite('exec', o.execDisabledReason ?? 'GetCapabilities says exec_enabled is false');
  const program = noopProgram();
  if (!program) return unsupportedSuite('exec', `no no-op program for ${process.arch}: the bench makes one for x64 and arm64, else it needs a static busybox`);

  const metrics: Metric[] = [];
  const unsupported: Unsupported[] = [];
  const checks = {
    noopActions: 0,
    noopSucceeded: 0,
    noopCachedResults: 0,
    bwrapSpawns: 0,
    bwrapSucceeded: 0,
    stagingActions: 0,
    stagingSucceeded: 0,
    stagingFilesLocal: 0,
    stagingTimesReported: 0,
    compileActions: 0,
    compileSucceeded: 0,
    compileOutputsElf: 0,
    localCompiles: 0,
    localCompilesSucceeded: 0,
    noopProgram: program.what,
  };
  const runId = randomUUID();
  const salts = (what: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${runId}/${what}/${i}`);
  const params: SuiteResult['params'] = { concurrency: o.concurrency, actions: o.actions, stagingFiles: o.stagingFiles, compiles: o.compiles };

  // --- No-op actions --------------------------------------------------------------------------
  const noopRoot = encodeTree({ files: [], dirs: [{ name: 'bin', dir: { files: [{ name: 'true', data: program.data, executable: true }], dirs: [] } }] });
  await uploadBlobs(o.clients, o.instance, noopRoot.blobs.values(), o.maxBatchBytes);
  const noopSpec: ActionSpec = { args: ['/bin/true'] };
  // Warm up: one action, which also tells whether the endpoint runs it at all.
  try {
    const [warm] = await uploadActions(o, noopRoot.root, noopSpec, salts('warm-up', 1));
    const r = await execute(o.clients, o.instance, warm!, { inlineStderr: true });
    if (!succeeded(r)) return unsupportedSuite('exec', `the no-op action (/bin/true in an input root holding only that) does not succeed on the endpoint: ${failure(r)}`);
  } catch (err) {
    const reason = unsupportedReason(err);
    if (reason) return unsupportedSuite('exec', `Execute: ${reason}`);
    throw err;
  }
  const bwrapWhyNot = await bwrapProblem();
  const bwrap = bwrapWhyNot ? undefined : findCommand('bwrap')!;
  if (bwrapWhyNot) unsupported.push({ what: 'bwrap baseline', reason: `${bwrapWhyNot}: the no-op figures have no baseline` });

  const noopLatencyC1: number[] = [];
  for (const c of o.concurrency) {
    const s = { rate: [] as number[], lat: [] as number[], bRate: [] as number[], bLat: [] as number[] };
    for (let rep = 1; rep <= o.repeat; rep++) {
      const n = Math.max(o.actions, c);
      if (bwrap) {
        const b = await runConcurrent(n, c, async () => {
          const r = await run(bwrap, BWRAP_BASELINE_ARGS);
          checks.bwrapSpawns++;
          if (r.code === 0) checks.bwrapSucceeded++;
        });
        s.bRate.push(n / b.seconds);
        s.bLat.push(median(b.latenciesMs));
      }
      const actions = await uploadActions(o, noopRoot.root, noopSpec, salts(`noop-c${c}-${rep}`, n));
      const responses: re.ExecuteResponse[] = new Array(n);
      const e = await runConcurrent(n, c, async (i) => void (responses[i] = await execute(o.clients, o.instance, actions[i]!)));
      s.rate.push(n / e.seconds);
      s.lat.push(median(e.latenciesMs));
      checks.noopActions += n;
      checks.noopSucceeded += responses.filter(succeeded).length;
      checks.noopCachedResults += responses.filter((r) => r.cachedResult).length;
      o.progress.step(
        `${n} no-op actions at concurrency ${c}, repetition ${rep}/${o.repeat}: ${formatNumber(s.rate.at(-1)!)} actions/s, p50 ${formatNumber(s.lat.at(-1)!)} ms` +
          (bwrap ? ` (bwrap ${formatNumber(s.bRate.at(-1)!)}/s, p50 ${formatNumber(s.bLat.at(-1)!)} ms)` : ''),
      );
    }
    if (c === 1) noopLatencyC1.push(...s.lat);
    const at = c > 1 ? `, ${c} at once` : '';
    const bLabel = `raw \`bwrap ${BWRAP_BASELINE_ARGS.join(' ')}\` spawned here${at}`;
    metrics.push(
      makeMetric({ suite: 'exec', name: 'noop', label: 'no-op action, Execute to result', unit: 'actions/s', better: 'higher', concurrency: c, samples: s.rate, baseline: bwrap ? { name: 'bwrap-spawn', label: bLabel, samples: s.bRate } : undefined }),
      makeMetric({ suite: 'exec', name: 'noop-latency', label: 'no-op action latency p50', unit: 'ms', better: 'lower', concurrency: c, samples: s.lat, baseline: bwrap ? { name: 'bwrap-spawn', label: bLabel, samples: s.bLat } : undefined }),
    );
  }

  // --- Input-root staging ---------------------------------------------------------------------
  const stagingTree = (salt: string, readOnly: boolean): TreeDir => {
    const dirs: TreeDir['dirs'] = [];
    for (let i = 0, d = 0; i < o.stagingFiles; d++) {
      const files: TreeDir['files'] = [];
      for (let j = 0; j < FILES_PER_DIRECTORY && i < o.stagingFiles; j++, i++) files.push({ name: `f${String(j).padStart(3, '0')}.h`, data: Buffer.from(`/* ${salt} file ${i} */\n#define BENCH_${i} ${i}\n`) });
      dirs.push({ name: `d${String(d).padStart(3, '0')}`, dir: { files, dirs: [] } });
    }
    return {
      files: [],
      dirs: [
        { name: 'bin', dir: { files: [{ name: 'true', data: program.data, executable: true }], dirs: [] } },
        { name: 'inputs', dir: { files: [], dirs, properties: readOnly ? [{ name: 'SubtreeReadOnly', value: 'true' }] : undefined } },
      ],
    };
  };
  params['stagingLayout'] = `bin/true and inputs/dNNN/fNNN.h, ${FILES_PER_DIRECTORY} files a directory; read-only variant: SubtreeReadOnly=true on inputs`;
  let serverReportsStaging = true;
  for (const variant of ['read-only', 'writable'] as const) {
    const s = { local: [] as number[], first: [] as number[], again: [] as number[], firstE2e: [] as number[], againE2e: [] as number[] };
    for (let rep = 1; rep <= o.repeat; rep++) {
      // New file contents each time: the first run really is the first for this server.
      const salt = `${runId}/${variant}/${rep}`;
      const tree = stagingTree(salt, variant === 'read-only');
      const encoded = encodeTree(tree);
      await uploadBlobs(o.clients, o.instance, encoded.blobs.values(), o.maxBatchBytes);

      const scratch = await mkdtemp(join(o.disk.dir, 'bench-staging-baseline-'));
      try {
        s.local.push((await timed(() => writeTreeLocally(tree, join(scratch, 'root')))).seconds * 1000);
        checks.stagingFilesLocal += o.stagingFiles;
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }

      const [first, again] = await uploadActions(o, encoded.root, noopSpec, [`${salt}/first`, `${salt}/again`]);
      for (const [digest, e2e, staged] of [
        [first!, s.firstE2e, s.first],
        [again!, s.againE2e, s.again],
      ] as const) {
        const t = await timed(() => execute(o.clients, o.instance, digest, { inlineStderr: true }));
        checks.stagingActions++;
        if (!succeeded(t.result)) throw new Error(`the ${variant} staging action failed on the endpoint: ${failure(t.result)}`);
        checks.stagingSucceeded++;
        e2e.push(t.seconds * 1000);
        const ms = serverStagingMs(t.result);
        if (ms === undefined) serverReportsStaging = false;
        else {
          checks.stagingTimesReported++;
          staged.push(ms);
        }
      }
      o.progress.step(
        `${o.stagingFiles} files ${variant}, repetition ${rep}/${o.repeat}: staging ${serverReportsStaging ? `${formatNumber(s.first.at(-1)!)} ms, again ${formatNumber(s.again.at(-1)!)} ms` : 'not reported'}, ` +
          `Execute ${formatNumber(s.firstE2e.at(-1)!)} ms, again ${formatNumber(s.againE2e.at(-1)!)} ms (writing the files here: ${formatNumber(s.local.at(-1)!)} ms)`,
      );
    }
    const local = { name: 'local-file-writes', label: `writing the same ${o.stagingFiles} files into a new directory here, ${o.disk.where}`, samples: s.local };
    const noop = noopLatencyC1.length ? { name: 'noop-action', label: 'a no-op action with an input root of one file (latency p50, concurrency 1)', samples: noopLatencyC1 } : undefined;
    const common = { suite: 'exec' as const, unit: 'ms', better: 'lower' as const, concurrency: 1 };
    if (serverReportsStaging) {
      metrics.push(
        makeMetric({ ...common, name: 'staging', variant: `${variant}-first`, label: `staging ${o.stagingFiles} files, ${variant}, first time (server-reported)`, samples: s.first, baseline: local }),
        makeMetric({ ...common, name: 'staging', variant: `${variant}-again`, label: `staging ${o.stagingFiles} files, ${variant}, again (server-reported)`, samples: s.again, baseline: local }),
      );
    }
    metrics.push(
      makeMetric({ ...common, name: 'staging-action', variant: `${variant}-first`, label: `no-op on ${o.stagingFiles} files, ${variant}, first time (Execute to result)`, samples: s.firstE2e, baseline: noop }),
      makeMetric({ ...common, name: 'staging-action', variant: `${variant}-again`, label: `no-op on ${o.stagingFiles} files, ${variant}, again (Execute to result)`, samples: s.againE2e, baseline: noop }),
    );
  }
  if (!serverReportsStaging) unsupported.push({ what: 'server-reported staging time', reason: "the endpoint's ExecutedActionMetadata has no input fetch timestamps: only Execute-to-result times are shown" });

  // --- A compile-like action ------------------------------------------------------------------
  const compile = await runCompile(o, salts, checks).catch((err) => {
    if (err instanceof UnsupportedError) return err.unsupported;
    throw err;
  });
  if ('what' in compile) unsupported.push(compile);
  else metrics.push(...compile);

  return { name: 'exec', status: unsupported.length ? 'partial' : 'ok', unsupported, params, metrics, checks };
}

/** gcc -O2 -c of a small file in the host-tools sandbox, against the same gcc run here. */
async function runCompile(o: ExecOptions, salts: (what: string, n: number) => string[], checks: Record<string, number | string>): Promise<Metric[]> {
  const gcc = findCommand('gcc');
  if (!gcc) throw new UnsupportedError({ what: 'compile', reason: 'gcc is not installed on this machine (the compile action uses the host gcc and is compared with it)' });
  const source = Buffer.from(compileSource());
  const root = encodeTree({ files: [{ name: 'bench.c', data: source }], dirs: [] });
  await uploadBlobs(o.clients, o.instance, root.blobs.values(), o.maxBatchBytes);
  const spec: ActionSpec = { args: [gcc, '-O2', '-c', 'bench.c', '-o', 'bench.o'], outputPaths: ['bench.o'], platform: [['reexec-sandbox', 'host-tools']] };
  try {
    const [warm] = await uploadActions(o, root.root, spec, salts('compile-warm-up', 1));
    const r = await execute(o.clients, o.instance, warm!, { inlineStderr: true });
    if (!succeeded(r)) throw new UnsupportedError({ what: 'compile', reason: `gcc in the host-tools sandbox (platform reexec-sandbox=host-tools) does not succeed on the endpoint: ${failure(r)}` });
  } catch (err) {
    const e = err as grpc.ServiceError;
    const reason = unsupportedReason(err) ?? (e.code === grpc.status.FAILED_PRECONDITION || e.code === grpc.status.INVALID_ARGUMENT ? `the endpoint refuses the action (${grpc.status[e.code]}: ${e.details})` : undefined);
    if (reason) throw new UnsupportedError({ what: 'compile', reason });
    throw err;
  }

  const scratch = await mkdtemp(join(o.disk.dir, 'bench-compile-baseline-'));
  const metrics: Metric[] = [];
  try {
    await writeFile(join(scratch, 'bench.c'), source);
    const inc = (k: string): void => void (checks[k] = Number(checks[k] ?? 0) + 1);
    for (const c of o.concurrency) {
      const s = { rate: [] as number[], lat: [] as number[], bRate: [] as number[], bLat: [] as number[] };
      for (let rep = 1; rep <= o.repeat; rep++) {
        const n = Math.max(o.compiles, c);
        const local = await runConcurrent(n, c, async (i) => {
          const r = await run(gcc, ['-O2', '-c', 'bench.c', '-o', `bench-${i}.o`], scratch);
          inc('localCompiles');
          if (r.code === 0) inc('localCompilesSucceeded');
        });
        s.bRate.push(n / local.seconds);
        s.bLat.push(median(local.latenciesMs));
        const actions = await uploadActions(o, root.root, spec, salts(`compile-c${c}-${rep}`, n));
        const responses: re.ExecuteResponse[] = new Array(n);
        const e = await runConcurrent(n, c, async (i) => void (responses[i] = await execute(o.clients, o.instance, actions[i]!)));
        s.rate.push(n / e.seconds);
        s.lat.push(median(e.latenciesMs));
        for (const r of responses) {
          inc('compileActions');
          if (succeeded(r)) inc('compileSucceeded');
        }
        // One output read back: an object file, made by the compiler.
        const out = responses.find(succeeded)?.result?.outputFiles?.find((f) => f.path === 'bench.o');
        if (out?.digest) {
          const got = await call<unknown, re.IBatchReadBlobsResponse>(o.clients.cas, 'BatchReadBlobs', { instanceName: o.instance, digests: [out.digest], digestFunction: SHA256_VALUE });
          const data = got.responses?.[0]?.data;
          if (data && Buffer.from(data).subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) inc('compileOutputsElf');
        }
        o.progress.step(`${n} gcc -O2 -c at concurrency ${c}, repetition ${rep}/${o.repeat}: ${formatNumber(s.rate.at(-1)!)} actions/s, p50 ${formatNumber(s.lat.at(-1)!)} ms (gcc here ${formatNumber(s.bRate.at(-1)!)}/s, p50 ${formatNumber(s.bLat.at(-1)!)} ms)`);
      }
      const at = c > 1 ? `, ${c} at once` : '';
      const bLabel = `the same \`gcc -O2 -c\` run here without a sandbox${at}`;
      metrics.push(
        makeMetric({ suite: 'exec', name: 'compile', label: `gcc -O2 -c of a ${source.byteLength} B file, host-tools sandbox`, unit: 'actions/s', better: 'higher', concurrency: c, samples: s.rate, baseline: { name: 'local-gcc', label: bLabel, samples: s.bRate } }),
        makeMetric({ suite: 'exec', name: 'compile-latency', label: 'compile action latency p50', unit: 'ms', better: 'lower', concurrency: c, samples: s.lat, baseline: { name: 'local-gcc', label: bLabel, samples: s.bLat } }),
      );
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  return metrics;
}
