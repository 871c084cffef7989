import { rmSync } from 'node:fs';
import { Flags } from '@oclif/core';
import { BaseCommand, UserError } from '../cli/base-command.js';
import { loadConfig, parseSize } from '../config/config.js';
import { formatReport } from '../bench/report.js';
import { BenchTargetError, DEFAULT_BENCH_OPTIONS, runBench } from '../bench/run-bench.js';
import { SUITE_NAMES, type BenchResult, type SuiteName } from '../bench/types.js';
import { createLogger } from '../util/logger.js';

export default class Bench extends BaseCommand {
  static override summary = 'Measure CAS throughput against baselines measured in the same run.';
  static override description =
    'cas-large: one blob up with ByteStream.Write and down with ByteStream.Read, in 1 MiB messages, against a raw grpc-js stream of the same bytes (same 16 MiB windows). ' +
    'cas-small: BatchUpdateBlobs, FindMissingBlobs and BatchReadBlobs of 1,000 × 100 B blobs per request, against a raw grpc-js unary echo of the same request size. ' +
    'SHA-256 with node crypto is measured too. Every figure is a median over the repetitions, shown with its ratio to its baseline. ' +
    'Without --endpoint the target is a temporary reexec daemon started in this process, with the configured storage settings (fsync on by default) and a data dir removed afterwards.';
  static override examples = [
    '<%= config.bin %> bench',
    '<%= config.bin %> bench --suite cas-large --size 1GiB --repeat 5',
    '<%= config.bin %> bench --endpoint grpc://127.0.0.1:50051 --instance main --json',
  ];

  static override flags = {
    suite: Flags.string({ options: [...SUITE_NAMES, 'all'], default: 'all', description: 'which suite to run' }),
    size: Flags.string({ default: '256MiB', description: 'cas-large: size of the blob (e.g. 64MiB, 1GiB)' }),
    repeat: Flags.integer({ default: DEFAULT_BENCH_OPTIONS.repeat, min: 1, description: 'repetitions of each suite; figures are medians' }),
    endpoint: Flags.string({ description: 'benchmark this REAPI server (grpc://HOST:PORT or unix:PATH) instead of a temporary in-process daemon' }),
    instance: Flags.string({ default: '', description: 'instance name to use on the target' }),
    'batch-blobs': Flags.integer({ default: DEFAULT_BENCH_OPTIONS.blobsPerBatch, min: 1, description: 'cas-small: blobs per batch request' }),
    batches: Flags.integer({ default: DEFAULT_BENCH_OPTIONS.batches, min: 1, description: 'cas-small: batch requests per repetition' }),
  };

  async run(): Promise<BenchResult> {
    const { flags } = await this.parse(Bench);
    const sizeBytes = parseSize(flags.size, '--size');
    if (sizeBytes < 1) throw new UserError(`--size ${flags.size}: the blob must have at least one byte`);
    if (flags.endpoint && !/^((grpc|http):\/\/)?[^\s/]+:[0-9]{1,5}$|^unix:\S+$/.test(flags.endpoint)) {
      throw new UserError(`--endpoint "${flags.endpoint}" is not grpc://HOST:PORT or unix:PATH`);
    }
    const suites: SuiteName[] = flags.suite === 'all' ? [...SUITE_NAMES] : [flags.suite as SuiteName];
    const config = flags.endpoint ? undefined : loadConfig(flags.config);

    let tempDir: string | undefined;
    const onSigint = (): void => {
      if (tempDir) rmSync(tempDir, { recursive: true, force: true });
      process.exit(130);
    };
    process.once('SIGINT', onSigint);
    try {
      const result = await runBench({
        ...DEFAULT_BENCH_OPTIONS,
        suites,
        sizeBytes,
        repeat: flags.repeat,
        blobsPerBatch: flags['batch-blobs'],
        batches: flags.batches,
        endpoint: flags.endpoint,
        instance: flags.instance,
        config,
        log: createLogger({ level: 'warn' }),
        progress: (line) => process.stderr.write(`${line}\n`),
        onTempDir: (dir) => (tempDir = dir),
      });
      if (!this.jsonEnabled()) this.log(formatReport(result));
      return result;
    } catch (err) {
      if (err instanceof BenchTargetError) throw new UserError(err.message);
      throw err;
    } finally {
      process.off('SIGINT', onSigint);
    }
  }
}
