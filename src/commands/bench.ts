import { readFileSync, rmSync } from 'node:fs';
import { Flags } from '@oclif/core';
import { BaseCommand, UserError } from '../cli/base-command.js';
import { endpointWantsTls, localAccess, type ClientSecurity } from '../client/client-security.js';
import { envToken, parseEndpoint, resolveDaemon } from '../cli/daemon-endpoint.js';
import { loadConfig, parseSize } from '../config/config.js';
import { compareResults, CompareFileError, loadEarlierResult } from '../bench/compare.js';
import { BenchProgress } from '../bench/progress.js';
import { formatMultiReport, formatReport } from '../bench/report.js';
import { BenchTargetError, DEFAULT_BENCH_OPTIONS, defaultConcurrency, runBench } from '../bench/run-bench.js';
import { runMultiBench, type LabelledTarget } from '../bench/multi.js';
import { parseTargets, perTarget, TargetArgError, tokenEnvName, type TargetArg } from '../bench/targets.js';
import { ALL_SUITES, SUITE_NAMES, type BenchResult, type MultiBenchResult, type SuiteName } from '../bench/types.js';
import { createLogger } from '../util/logger.js';

const d = DEFAULT_BENCH_OPTIONS;
const sizeList = (xs: number[]): string => xs.map((x) => (x >= 1024 ** 3 ? `${x / 1024 ** 3}GiB` : x >= 1024 ** 2 ? `${x / 1024 ** 2}MiB` : x >= 1024 ? `${x / 1024}KiB` : `${x}B`)).join(',');

function parseList<T>(text: string, flag: string, parse: (s: string) => T): T[] {
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new UserError(`${flag} "${text}": give at least one value`);
  return items.map(parse);
}

export default class Bench extends BaseCommand {
  static override summary = 'Benchmark reexec, or any REAPI endpoint, against baselines measured in the same run.';
  static override description =
    'Suites: cas-small (BatchUpdateBlobs, FindMissingBlobs, BatchReadBlobs of 100 B–64 KiB blobs), cas-large (ByteStream.Write and Read of 1 MiB–1 GiB blobs, and a resumed write), ' +
    'ac (UpdateActionResult and GetActionResult), exec (a no-op action\'s latency and actions/s, staging a 10,000-file input root the first time and again, read-only and writable, and a gcc compile in the host-tools sandbox); ' +
    'history (only when asked for: the no-op action on two temporary daemons, the action history on and off, in interleaved rounds); ' +
    'each at every concurrency of --concurrency. Every figure is a median over the repetitions, next to a baseline measured in the same run on this machine ' +
    '(a raw grpc-js stream or unary echo of the same bytes, SHA-256, plain file writes, `bwrap --unshare-all --ro-bind / / /bin/true`, the same gcc without a sandbox) and its ratio to it: ' +
    'compare ratios across runs, not absolute figures. Suites or calls the endpoint does not offer are reported as unsupported. ' +
    'With several targets (--endpoint repeated, --local next to --endpoint) each repetition runs every suite on each target in turn (A B A B ...) and one table shows a row per metric, a column per target ' +
    '(its figure, and its ratio to its own baseline) and each target over the first; --json prints the same data. ' +
    'Without --endpoint or --local the target is a temporary reexec daemon started in this process with the configured storage settings (fsync on by default), execution on when the exec suite runs, and a data dir removed afterwards.';
  static override examples = [
    '<%= config.bin %> bench',
    '<%= config.bin %> bench --suite exec --json > exec.json',
    '<%= config.bin %> bench --suite history --history-rounds 20',
    '<%= config.bin %> bench --suite cas-large --sizes 64MiB,1GiB --repeat 5',
    '<%= config.bin %> bench --local --suite cas-small,ac',
    '<%= config.bin %> bench --endpoint grpcs://buildhost:8980 --instance main --server-cert ca.pem --token "$TOKEN"',
    '<%= config.bin %> bench --compare before.json',
    '<%= config.bin %> bench --local --endpoint casd=grpc://127.0.0.1:50051 --suite cas-small,exec',
    '<%= config.bin %> bench --endpoint ours=temporary --endpoint theirs=grpcs://buildhost:8980 --token theirs="$THEIR_TOKEN" --server-cert theirs=ca.pem --json > peers.json',
  ];

  static override flags = {
    suite: Flags.string({ default: 'all', description: `suites to run, comma-separated: ${SUITE_NAMES.join(', ')}, or all (${ALL_SUITES.join(', ')})` }),
    concurrency: Flags.string({ description: 'the concurrency sweep, comma-separated (default: 1 and twice the cores)' }),
    repeat: Flags.integer({ default: d.repeat, min: 1, description: 'repetitions of every measurement; figures are medians' }),
    sizes: Flags.string({ default: sizeList(d.sizes), description: 'cas-large: blob sizes, each at concurrency 1' }),
    'sweep-size': Flags.string({ default: sizeList([d.sweepSize]), description: 'cas-large: blob size of the concurrency sweep and of the resumed write' }),
    'cell-bytes': Flags.string({ default: sizeList([d.minBytesPerCell]), description: 'cas-large: bytes moved per size, concurrency and repetition at least (several blobs when they are small)' }),
    'blob-sizes': Flags.string({ default: sizeList(d.blobSizes), description: 'cas-small: blob sizes' }),
    'batch-blobs': Flags.integer({ default: d.blobsPerBatch, min: 1, description: 'cas-small: most blobs per batch request (fewer when the endpoint\'s batch limit says so)' }),
    batches: Flags.integer({ default: d.batches, min: 1, description: 'cas-small: batch requests per repetition and concurrency' }),
    'ac-calls': Flags.integer({ default: d.acOps, min: 1, description: 'ac: calls of each kind per repetition and concurrency' }),
    actions: Flags.integer({ default: d.actions, min: 1, description: 'exec: no-op actions per repetition and concurrency' }),
    'staging-files': Flags.integer({ default: d.stagingFiles, min: 1, description: 'exec: files of the staging input root' }),
    compiles: Flags.integer({ default: d.compiles, min: 1, description: 'exec: compile actions per repetition and concurrency' }),
    'history-rounds': Flags.integer({ default: d.historyRounds, min: 1, description: 'history: interleaved rounds of --actions no-op actions on the history-on and the history-off daemon' }),
    endpoint: Flags.string({
      char: 'e',
      multiple: true,
      description:
        'benchmark this REAPI server: grpc://HOST:PORT, grpcs://HOST:PORT (TLS), HOST:PORT or unix:PATH, or "temporary" (the temporary reexec daemon); ' +
        'NAME=ADDRESS labels it. Repeat it to compare servers in one run: every suite runs on each in turn, repetition by repetition, and one table shows them side by side with their ratios to the first',
    }),
    local: Flags.boolean({ description: "benchmark the configured local daemon (found through the config's listen address, with its TLS files and a token from its token file); with --endpoint it is the first column, labelled local", default: false }),
    instance: Flags.string({ default: '', description: 'instance name to use on every target' }),
    token: Flags.string({
      multiple: true,
      description: 'bearer token for --endpoint (default: $REEXEC_TOKEN); with several endpoints write NAME=TOKEN for the one labelled NAME (default: $REEXEC_TOKEN_NAME, NAME in capitals)',
      dependsOn: ['endpoint'],
    }),
    'server-cert': Flags.string({ multiple: true, description: 'PEM file of the CA that signed the server certificate of a grpcs:// endpoint (default: the system roots); NAME=FILE for the endpoint labelled NAME', dependsOn: ['endpoint'] }),
    'client-cert': Flags.string({ multiple: true, description: 'PEM client certificate for mutual TLS; NAME=FILE for the endpoint labelled NAME', dependsOn: ['endpoint', 'client-key'] }),
    'client-key': Flags.string({ multiple: true, description: 'PEM private key of --client-cert; NAME=FILE for the endpoint labelled NAME', dependsOn: ['endpoint', 'client-cert'] }),
    compare: Flags.string({ description: 'a file from an earlier `reexec bench --json`: show the change of every metric both runs measured' }),
  };

  async run(): Promise<BenchResult | MultiBenchResult> {
    const { flags } = await this.parse(Bench);
    const size = (flag: string) => (s: string) => {
      const n = parseSize(s, flag);
      if (n < 1) throw new UserError(`${flag} ${s}: a blob must have at least one byte`);
      return n;
    };
    const suites: SuiteName[] = [];
    for (const s of parseList(flags.suite, '--suite', (x) => x)) {
      if (s === 'all') suites.push(...ALL_SUITES);
      else if ((SUITE_NAMES as readonly string[]).includes(s)) suites.push(s as SuiteName);
      else throw new UserError(`--suite ${s}: no such suite (suites: ${SUITE_NAMES.join(', ')}, all)`);
    }
    const concurrency = flags.concurrency
      ? parseList(flags.concurrency, '--concurrency', (x) => {
          if (!/^[0-9]+$/.test(x) || Number(x) < 1 || Number(x) > 1024) throw new UserError(`--concurrency ${x}: give whole numbers from 1 to 1024`);
          return Number(x);
        })
      : defaultConcurrency();
    let targets: TargetArg[];
    const per = { token: new Map<string, string>(), serverCert: new Map<string, string>(), clientCert: new Map<string, string>(), clientKey: new Map<string, string>() };
    try {
      targets = parseTargets(flags.endpoint ?? [], flags.local);
      per.token = perTarget('--token', flags.token ?? [], targets);
      per.serverCert = perTarget('--server-cert', flags['server-cert'] ?? [], targets);
      per.clientCert = perTarget('--client-cert', flags['client-cert'] ?? [], targets);
      per.clientKey = perTarget('--client-key', flags['client-key'] ?? [], targets);
    } catch (err) {
      if (err instanceof TargetArgError) throw new UserError(err.message);
      throw err;
    }
    for (const t of targets) if (t.endpoint) parseEndpoint(t.endpoint);
    for (const t of targets) {
      if (per.clientCert.has(t.label) !== per.clientKey.has(t.label)) throw new UserError(`--client-cert and --client-key go together: give both for ${t.label}`);
    }
    const multi = targets.length > 1;
    if (multi && flags.compare) throw new UserError('--compare compares a run against one endpoint with an earlier one: give one target (or compare the endpoints of this run, which the table does)');
    const earlier = flags.compare ? this.loadEarlier(flags.compare) : undefined;

    const needsConfig = targets.some((t) => t.kind !== 'endpoint');
    const config = needsConfig ? loadConfig(flags.config) : undefined;
    const pem = (flag: string, file: string | undefined): Buffer | undefined => {
      if (!file) return undefined;
      try {
        return readFileSync(file);
      } catch (err) {
        throw new UserError(`${flag} ${file}: cannot read it: ${(err as Error).message}`);
      }
    };
    const specs: LabelledTarget[] = targets.map((t) => {
      if (t.kind === 'temporary') return { label: t.label, spec: {} };
      if (t.kind === 'local') {
        // Read, write and execute are what the suites use; a token with execute usually has them all.
        const access = localAccess(config!, suites.includes('exec') ? 'execute' : 'write', envToken());
        return { label: t.label, spec: { endpoint: access.endpoint, security: access.security, localConfig: config!.source ?? 'the built-in defaults' } };
      }
      const { security } = resolveDaemon({
        endpoint: t.endpoint,
        need: 'write',
        // One endpoint: --token, else REEXEC_TOKEN; several: also REEXEC_TOKEN_<NAME> for each.
        token: per.token.get(t.label) ?? (multi ? envToken(tokenEnvName(t.label)) : undefined),
        security: {
          serverCa: pem('--server-cert', per.serverCert.get(t.label)),
          clientCert: pem('--client-cert', per.clientCert.get(t.label)),
          clientKey: pem('--client-key', per.clientKey.get(t.label)),
        },
      });
      if ((security.serverCa || security.clientCert) && !endpointWantsTls(t.endpoint!)) {
        throw new UserError(`--server-cert and --client-cert need TLS: write the endpoint as grpcs://${t.endpoint!.replace(/^(grpc|http):\/\//, '')}${t.label !== t.endpoint ? ` (${t.label})` : ''}`);
      }
      return { label: t.label, spec: { endpoint: t.endpoint, security } };
    });

    const tempDirs: string[] = [];
    // Interrupted or stopped: the temporary daemon's data dir goes with the run.
    const onSignal = (signal: NodeJS.Signals): void => {
      for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
      process.exit(signal === 'SIGINT' ? 130 : 143);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      const options = {
        ...d,
        suites,
        concurrency,
        repeat: flags.repeat,
        sizes: parseList(flags.sizes, '--sizes', size('--sizes')),
        sweepSize: size('--sweep-size')(flags['sweep-size']),
        minBytesPerCell: size('--cell-bytes')(flags['cell-bytes']),
        blobSizes: parseList(flags['blob-sizes'], '--blob-sizes', size('--blob-sizes')),
        blobsPerBatch: flags['batch-blobs'],
        batches: flags.batches,
        acOps: flags['ac-calls'],
        actions: flags.actions,
        stagingFiles: flags['staging-files'],
        compiles: flags.compiles,
        historyRounds: flags['history-rounds'],
        instance: flags.instance,
        config,
        log: createLogger({ level: 'warn' }),
        progress: new BenchProgress(process.stderr, { suites: multi ? suites.length * targets.length * flags.repeat : suites.length }),
        onTempDir: (dir: string) => void tempDirs.push(dir),
      };
      if (multi) {
        const result = await runMultiBench({ ...options, targets: specs });
        if (!this.jsonEnabled()) this.log(formatMultiReport(result));
        return result;
      }
      const only = specs[0]!.spec;
      const result = await runBench({ ...options, endpoint: only.endpoint, security: only.security, localConfig: only.localConfig, config: only.endpoint ? undefined : config });
      if (earlier) result.comparison = compareResults(earlier, result, flags.compare!);
      if (!this.jsonEnabled()) this.log(formatReport(result));
      return result;
    } catch (err) {
      if (err instanceof BenchTargetError) throw new UserError(err.message, flags.local ? 'Is the daemon running? Start it with `reexec start`, or run the bench without --local to use a temporary daemon.' : undefined);
      throw err;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }

  private loadEarlier(file: string) {
    try {
      return loadEarlierResult(file);
    } catch (err) {
      if (err instanceof CompareFileError) throw new UserError(err.message);
      throw err;
    }
  }
}
