#!/usr/bin/env node
// Where a no-op action's milliseconds go (not a test): runs no-op actions (a tiny static ELF as
// /bin/true in a 1-file input root, do_not_cache, skip_cache_lookup) on an endpoint, --concurrency
// at a time, and prints the median of each phase the server reports in ExecutedActionMetadata
// next to the client's Execute-to-result latency. Run it against two daemons alternately (a
// build before and after a change) to A/B the execution path in the same run.
//
//   npm run build && node scripts/bench-phases.js --endpoint HOST:PORT [--actions 40] [--concurrency 1] [--json]
//
// Phases (ms): submit→queued (the client's clock to queued_timestamp: Execute's own work),
// queued→start (waiting for a slot), staging (input fetch), run (execution start to end: the
// sandbox), outputs (output upload), done→client (worker completed to the last Operation
// received: completion, journal, the stream). Timestamps are the server's, in whole ms.
import { parseArgs } from 'node:util';
import { fromDist } from './lib/dist.js';

const { values: args } = parseArgs({
  options: { endpoint: { type: 'string' }, actions: { type: 'string', default: '40' }, concurrency: { type: 'string', default: '1' }, json: { type: 'boolean', default: false } },
});
const N = Number(args.actions);
const C = Number(args.concurrency);
if (!args.endpoint || !Number.isInteger(N) || N < 1 || !Number.isInteger(C) || C < 1) {
  process.stderr.write('bench-phases: --endpoint HOST:PORT is required; --actions and --concurrency take whole numbers from 1\n');
  process.exit(2);
}
const { connect, encodeTree, uploadBlobs, uploadActions, execute, noopProgram, setProtoTimeToMs, median } = await fromDist(
  'bench-phases',
  'client/reapi-client.js',
  'bench/exec.js',
  'util/proto-time.js',
  'bench/stats.js',
);

const clients = connect(args.endpoint);
const program = noopProgram();
if (!program) {
  process.stderr.write('bench-phases: no no-op program for this machine (x64 or arm64, or a static busybox)\n');
  process.exit(2);
}
const root = encodeTree({ files: [], dirs: [{ name: 'bin', dir: { files: [{ name: 'true', data: program.data, executable: true }], dirs: [] } }] });
await uploadBlobs(clients, '', root.blobs.values(), 0);
const run = `${Date.now()}-${process.pid}`;
const actions = await uploadActions({ clients, instance: '', maxBatchBytes: 0 }, root.root, { args: ['/bin/true'] }, Array.from({ length: N + 2 }, (_, i) => `${run}/${i}`));
// Warm up: the first actions pay for the daemon's first staging and spawn.
for (const a of actions.slice(0, 2)) await execute(clients, '', a);

const rows = [];
let next = 2;
const t0 = performance.now();
await Promise.all(
  Array.from({ length: C }, async () => {
    while (next < actions.length) {
      const a = actions[next++];
      const sent = Date.now();
      const p0 = performance.now();
      const r = await execute(clients, '', a);
      const latency = performance.now() - p0;
      const got = Date.now();
      const m = r.result?.executionMetadata ?? {};
      const t = (k) => setProtoTimeToMs(m[k]);
      rows.push({
        latency,
        'submit→queued': t('queuedTimestamp') - sent,
        'queued→start': t('workerStartTimestamp') - t('queuedTimestamp'),
        staging: t('inputFetchCompletedTimestamp') - t('inputFetchStartTimestamp'),
        run: t('executionCompletedTimestamp') - t('executionStartTimestamp'),
        outputs: t('outputUploadCompletedTimestamp') - t('outputUploadStartTimestamp'),
        'done→client': got - t('workerCompletedTimestamp'),
      });
    }
  }),
);
const seconds = (performance.now() - t0) / 1000;
clients.close();
const result = { endpoint: args.endpoint, actions: N, concurrency: C, actionsPerSecond: N / seconds };
for (const k of Object.keys(rows[0])) result[k] = median(rows.map((r) => r[k]).filter((v) => Number.isFinite(v)));
if (args.json) process.stdout.write(JSON.stringify(result) + '\n');
else process.stdout.write(Object.entries(result).map(([k, v]) => `${k}: ${typeof v === 'number' ? Math.round(v * 100) / 100 : v}`).join('  ') + '\n');
