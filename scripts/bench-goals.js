#!/usr/bin/env node
// The goal table of issue 13 in one run (a benchmark, not a test): every figure next to its
// reference measured in the same run on this machine, the two sides alternating.
//
//   - `reexec bench` against a reexec daemon (`reexec start`, a process of its own, default
//     settings: fsync on, execution on) and buildbox-casd 1.4 in server mode from the test
//     clients root (`buildbox-casd --bind=127.0.0.1:PORT --buildbox-run=buildbox-run-bubblewrap
//     DIR`: CAS, ActionCache, Execution), the two endpoints interleaved: the no-op action end
//     to end (vs casd + buildbox-run-bubblewrap, and vs raw `bwrap … /bin/true`, latency at
//     concurrency 1 and throughput at twice the cores), BatchUpdateBlobs of 1,000 × 100 B (vs a
//     raw grpc-js unary call of the same bytes), 1 MiB ByteStream writes 64 in a row and 8 at
//     once (vs file write + fsync of the same bytes);
//   - trexe (buildbox 1.4, in the clients root) running /bin/true in a busybox input root with
//     --skip-cache-lookup against the reexec daemon and against casd, alternating;
//   - casupload and casdownload of one fresh 256 MiB file (buildbox 1.4, in the clients root)
//     against the reexec daemon and against casd, alternating;
//   - the reexec daemon's peak RSS (VmHWM) while one 4 GiB blob streams in through
//     ByteStream.Write and back out through ByteStream.Read (a fresh daemon process);
//   - scripts/bench-bazel.js: 100 small genrules, Bazel 4.2 local sandboxed vs --remote_executor.
//
//   npm run build && node scripts/bench-goals.js [--repeat 3] [--parts bench,trexe,cas-tools,rss,bazel] [--trexe-runs 10]
//       [--cas-size 256MiB] [--rss-size 4GiB] [--bazel-rounds 3] [--json] [--out DIR]
//
// Needs root and the clients root (test/e2e/harness/clients-root.sh) for casd and the buildbox
// tools; exits 2 when it cannot run. --out keeps every raw JSON (the bench's own included).
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fromDist, scratchDir } from './lib/dist.js';
import { busyboxRoot, clientsRoot, clientsWork, median, memoryOf, REPO_ROOT, runInRoot, startCasd, startReexec } from './lib/peers.js';

const PARTS = ['bench', 'trexe', 'cas-tools', 'rss', 'bazel'];
const { values: args } = parseArgs({
  options: {
    repeat: { type: 'string', default: '3' },
    parts: { type: 'string', default: PARTS.join(',') },
    'cas-size': { type: 'string', default: '256MiB' },
    'rss-size': { type: 'string', default: '4GiB' },
    'bazel-rounds': { type: 'string', default: '3' },
    'trexe-runs': { type: 'string', default: '10' },
    json: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const fail = (msg) => {
  process.stderr.write(`bench-goals: ${msg}\n`);
  process.exit(2);
};
const { connect, pumpWrites, parseSize } = await fromDist('bench-goals', 'client/reapi-client.js', 'bench/raw-grpc.js', 'config/config.js');
const REPEAT = Number(args.repeat);
if (!Number.isInteger(REPEAT) || REPEAT < 1) fail('--repeat takes a whole number from 1');
const parts = args.parts.split(',').filter(Boolean);
for (const p of parts) if (!PARTS.includes(p)) fail(`--parts ${p}: no such part (${PARTS.join(', ')})`);
const CAS_SIZE = parseSize(args['cas-size'], '--cas-size');
const RSS_SIZE = parseSize(args['rss-size'], '--rss-size');
const clients = clientsRoot();
if (clients.skip && parts.some((p) => p === 'bench' || p === 'trexe' || p === 'cas-tools')) fail(clients.skip);
const TREXE_RUNS = Number(args['trexe-runs']);
if (!Number.isInteger(TREXE_RUNS) || TREXE_RUNS < 1) fail('--trexe-runs takes a whole number from 1');
const out = args.out ? (mkdirSync(args.out, { recursive: true }), args.out) : undefined;
const save = (name, data) => out && writeFileSync(join(out, name), typeof data === 'string' ? data : JSON.stringify(data, null, 2));
const info = (line) => process.stderr.write(`bench-goals: ${line}\n`);
const MiB = 1024 * 1024;
const cores = cpus().length;
const started = new Date();
const load = [loadavg().map((x) => x.toFixed(2))];

/** A command's stdout (its stderr passes through as progress); rejects unless it exits 0. */
function capture(argv, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', opts.quiet ? 'ignore' : 'inherit'], env: { ...process.env, ...opts.env } });
    let stdout = '';
    child.stdout.on('data', (b) => (stdout += b));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${argv.slice(0, 4).join(' ')} … exited ${code}`))));
  });
}

const cleanups = [];
const results = { bench: {}, trexe: undefined, casTools: undefined, rss: undefined, bazel: undefined };
const commands = [];
try {
  // --- reexec bench, reexec vs casd, interleaved --------------------------------------------
  if (parts.includes('bench') || parts.includes('trexe') || parts.includes('cas-tools')) {
    const dataDir = scratchDir('reexec-goals-');
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const reexec = await startReexec(dataDir);
    cleanups.push(() => reexec.stop());
    const casdWork = clientsWork(clients.root, 'reexec-goals-casd-');
    cleanups.push(() => rmSync(casdWork.work, { recursive: true, force: true }));
    const casd = await startCasd(clients.root, casdWork.inside);
    cleanups.push(() => casd.stop());
    info(`reexec daemon at ${reexec.url} (data ${dataDir}), buildbox-casd at ${casd.url} (cache ${casdWork.work})`);

    if (parts.includes('bench')) {
      const endpoints = ['--endpoint', `reexec=${reexec.url}`, '--endpoint', `casd=${casd.url}`];
      const runs = {
        cas: ['--suite', 'cas-small,cas-large', '--blob-sizes', '100B', '--batch-blobs', '1000', '--batches', '20', '--sizes', '1MiB', '--sweep-size', '1MiB', '--cell-bytes', '64MiB', '--concurrency', '1,8'],
        exec: ['--suite', 'exec', '--concurrency', `1,${2 * cores}`, '--actions', '40', '--staging-files', '1000', '--compiles', '4'],
      };
      for (const [name, flags] of Object.entries(runs)) {
        const argv = [process.execPath, 'bin/run.js', 'bench', ...endpoints, ...flags, '--repeat', String(REPEAT), '--json'];
        commands.push(`node bin/run.js bench --endpoint reexec=grpc://127.0.0.1:PORT --endpoint casd=grpc://127.0.0.1:PORT2 ${flags.join(' ')} --repeat ${REPEAT} --json`);
        info(`reexec bench ${flags.join(' ')} against reexec and casd, interleaved`);
        results.bench[name] = JSON.parse(await capture(argv));
        save(`bench-${name}.json`, results.bench[name]);
      }
    }

    // --- trexe: a no-op action end to end, as a buildbox client sees it -----------------------
    if (parts.includes('trexe')) {
      const w = clientsWork(clients.root, 'reexec-goals-trexe-');
      cleanups.push(() => rmSync(w.work, { recursive: true, force: true }));
      busyboxRoot(clients.root, join(w.work, 'rootfs'));
      const targets = [
        ['reexec', reexec.url],
        ['casd', casd.url],
      ];
      const digests = {};
      for (const [name, url] of targets) {
        const up = await runInRoot(clients.root, ['casupload', `--remote=${url}`, `--output-digest-file=${name}.digest`, 'rootfs'], { cwd: w.inside });
        if (up.code !== 0) throw new Error(`casupload of the busybox root to ${name} failed:\n${up.output}`);
        digests[name] = readFileSync(join(w.work, `${name}.digest`), 'utf8').trim();
      }
      // Entering the clients root alone (the same for both sides), as a reference for what trexe adds.
      const times = { reexec: [], casd: [], enterRoot: [] };
      const trexe = (name, url) => runInRoot(clients.root, ['trexe', `--remote=${url}`, `--input-root-digest=${digests[name]}`, '--skip-cache-lookup', '--', '/bin/true'], { cwd: w.inside });
      for (const [name, url] of targets) {
        const warm = await trexe(name, url);
        if (warm.code !== 0) throw new Error(`trexe /bin/true on ${name} failed:\n${warm.output}`);
      }
      const runs = TREXE_RUNS * REPEAT;
      for (let i = 0; i < runs; i++) {
        for (const [name, url] of i % 2 ? [...targets].reverse() : targets) {
          const r = await trexe(name, url);
          if (r.code !== 0) throw new Error(`trexe /bin/true on ${name} failed:\n${r.output}`);
          times[name].push(r.ms);
        }
        times.enterRoot.push((await runInRoot(clients.root, ['true'], { cwd: w.inside })).ms);
      }
      info(`trexe /bin/true (busybox root, --skip-cache-lookup), ${runs} runs each, alternating: reexec median ${median(times.reexec).toFixed(0)} ms, casd ${median(times.casd).toFixed(0)} ms (entering the clients root: ${median(times.enterRoot).toFixed(0)} ms)`);
      results.trexe = { runs, times };
      commands.push(`trexe --remote=URL --input-root-digest=BUSYBOX_ROOT --skip-cache-lookup -- /bin/true (in the clients root, ${runs} runs on each, alternating)`);
    }

    // --- casupload / casdownload of a 256 MiB file, alternating ------------------------------
    if (parts.includes('cas-tools')) {
      const w = clientsWork(clients.root, 'reexec-goals-tools-');
      cleanups.push(() => rmSync(w.work, { recursive: true, force: true }));
      const times = { reexec: { up: [], down: [] }, casd: { up: [], down: [] } };
      const targets = [
        ['reexec', reexec.url],
        ['casd', casd.url],
      ];
      for (let rep = 1; rep <= REPEAT; rep++) {
        // A new file each repetition (nothing deduplicates), made before any clock starts.
        const file = join(w.work, 'blob');
        const data = randomBytes(CAS_SIZE);
        const hash = createHash('sha256').update(data).digest('hex');
        writeFileSync(file, data);
        for (const [name, url] of targets) {
          const up = await runInRoot(clients.root, ['casupload', `--remote=${url}`, 'blob'], { cwd: w.inside });
          if (up.code !== 0) throw new Error(`casupload to ${name} failed:\n${up.output}`);
          times[name].up.push(up.ms);
        }
        for (const [name, url] of targets) {
          const dest = `down-${name}-${rep}`;
          const down = await runInRoot(clients.root, ['casdownload', `--remote=${url}`, `--file-digest=${hash}/${CAS_SIZE}`, `--destination-dir=${dest}`], { cwd: w.inside });
          if (down.code !== 0) throw new Error(`casdownload from ${name} failed:\n${down.output}`);
          // casdownload --file-digest writes the blob into the destination dir under a name of its choosing.
          const names = readdirSync(join(w.work, dest));
          if (names.length !== 1) throw new Error(`casdownload from ${name} left ${names.length} files in ${dest} (${names.join(', ')}), not one`);
          const got = readFileSync(join(w.work, dest, names[0]));
          if (createHash('sha256').update(got).digest('hex') !== hash) throw new Error(`casdownload from ${name} brought back other bytes`);
          rmSync(join(w.work, dest), { recursive: true, force: true });
          times[name].down.push(down.ms);
        }
        info(`casupload/casdownload of ${CAS_SIZE / MiB} MiB, repetition ${rep}/${REPEAT}: reexec ${times.reexec.up.at(-1).toFixed(0)}/${times.reexec.down.at(-1).toFixed(0)} ms, casd ${times.casd.up.at(-1).toFixed(0)}/${times.casd.down.at(-1).toFixed(0)} ms`);
      }
      results.casTools = { sizeBytes: CAS_SIZE, times };
      commands.push(`casupload --remote=URL blob; casdownload --remote=URL --file-digest=HASH/${CAS_SIZE} --destination-dir=DIR (in the clients root, reexec then casd, ${REPEAT} fresh files)`);
    }
  }

  // --- peak RSS of a daemon streaming one large blob in and out -----------------------------
  if (parts.includes('rss')) {
    const dataDir = scratchDir('reexec-goals-rss-');
    const daemon = await startReexec(dataDir);
    try {
      results.rss = await streamLargeBlob(daemon, RSS_SIZE);
    } finally {
      await daemon.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
    commands.push(`one ${RSS_SIZE / 1024 ** 3} GiB blob through ByteStream.Write and back through ByteStream.Read (1 MiB messages) on a fresh \`reexec start\`; VmHWM from /proc`);
  }

  // --- Bazel --------------------------------------------------------------------------------
  if (parts.includes('bazel')) {
    const argv = [process.execPath, 'scripts/bench-bazel.js', '--rounds', args['bazel-rounds'], '--json'];
    commands.push(`node scripts/bench-bazel.js --rounds ${args['bazel-rounds']}`);
    info('scripts/bench-bazel.js: 100 genrules, local sandboxed vs remote on reexec, alternating');
    results.bazel = JSON.parse(await capture(argv));
    save('bazel.json', results.bazel);
  }
} finally {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
}
load.push(loadavg().map((x) => x.toFixed(2)));

/**
 * One 1 MiB message after another, `size` bytes in all: distinct chunks (a random MiB with the
 * chunk's index in its first bytes), so the whole blob is never in this process's memory.
 */
function chunkOf(base, i) {
  const c = Buffer.from(base);
  c.writeBigUInt64BE(BigInt(i), 0);
  return c;
}

async function streamLargeBlob(daemon, size) {
  const chunk = MiB;
  const count = Math.ceil(size / chunk);
  const base = randomBytes(chunk);
  const piece = (i) => {
    const c = chunkOf(base, i);
    return i === count - 1 && size % chunk ? c.subarray(0, size % chunk) : c;
  };
  const h = createHash('sha256');
  for (let i = 0; i < count; i++) h.update(piece(i));
  const hash = h.digest('hex');
  const c = connect(daemon.url.replace('grpc://', ''));
  const idle = memoryOf(daemon.pid);
  let peakRss = idle.rss;
  const sampler = setInterval(() => {
    try {
      peakRss = Math.max(peakRss, memoryOf(daemon.pid).rss);
    } catch {
      /* exited */
    }
  }, 100);
  try {
    const t0 = process.hrtime.bigint();
    await new Promise((resolve, reject) => {
      let finished = false;
      const stream = c.byteStream.Write((err, res) => {
        finished = true;
        if (err) reject(err);
        else if (Number(res.committedSize) !== size) reject(new Error(`ByteStream.Write committed ${res.committedSize} of ${size} bytes`));
        else resolve();
      });
      pumpWrites(stream, count, (i) => ({ resourceName: i === 0 ? `uploads/${randomBytes(8).toString('hex')}/blobs/${hash}/${size}` : '', writeOffset: i * chunk, data: piece(i), finishWrite: i === count - 1 }), () => finished);
    });
    const writeSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const afterWrite = memoryOf(daemon.pid);
    const t1 = process.hrtime.bigint();
    const back = createHash('sha256');
    let bytes = 0;
    await new Promise((resolve, reject) => {
      const stream = c.byteStream.Read({ resourceName: `blobs/${hash}/${size}`, readOffset: 0, readLimit: 0 });
      stream.on('data', (r) => {
        back.update(r.data);
        bytes += r.data.byteLength;
      });
      stream.on('error', reject);
      stream.on('end', resolve);
    });
    const readSeconds = Number(process.hrtime.bigint() - t1) / 1e9;
    if (bytes !== size || back.digest('hex') !== hash) throw new Error(`ByteStream.Read of the ${size}-byte blob brought back ${bytes} bytes${bytes === size ? ' of other content' : ''}`);
    const end = memoryOf(daemon.pid);
    info(`${size / MiB} MiB blob in ${writeSeconds.toFixed(1)} s and out ${readSeconds.toFixed(1)} s; daemon RSS idle ${(idle.rss / MiB).toFixed(0)} MiB, peak ${(end.hwm / MiB).toFixed(0)} MiB`);
    return { sizeBytes: size, idleRss: idle.rss, rssAfterWrite: afterWrite.rss, peakRssSampled: peakRss, hwm: end.hwm, writeSeconds, readSeconds };
  } finally {
    clearInterval(sampler);
    c.close();
  }
}

// --- the goal table -------------------------------------------------------------------------
const rows = [];
const cell = (r, id, label) => {
  const row = r?.rows.find((x) => x.id === id);
  const i = r?.endpoints.findIndex((e) => e.label === label);
  return row && i >= 0 ? row.cells[i] : undefined;
};
const num = (v, unit) => (v === undefined || v === null ? 'n/a' : `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${unit}`);
const x = (v) => (v === undefined || v === null || !Number.isFinite(v) ? 'n/a' : `${v.toFixed(v >= 10 ? 1 : v >= 0.1 ? 2 : 3)}×`);
const push = (what, reexec, reference, ratio, goal) => rows.push({ what, reexec, reference, ratio, goal });

if (results.bazel) {
  const b = results.bazel;
  push(`Bazel ${b.bazelVersion}, ${b.targets} genrules, remote on reexec vs local sandboxed`, num(b.remote.medianSeconds, 's'), `local ${num(b.local.medianSeconds, 's')}`, x(b.ratio), '≤ 1.1×');
}
if (results.trexe) {
  const t = results.trexe.times;
  const [r, c, e] = [median(t.reexec), median(t.casd), median(t.enterRoot)];
  push('trexe no-op action (`/bin/true`, busybox root, cache lookup skipped), end to end, vs buildbox-casd + buildbox-run-bubblewrap', num(r, 'ms'), `casd ${num(c, 'ms')} (both include entering the clients root, ${num(e, 'ms')} alone; without it ${x((r - e) / (c - e))})`, x(r / c), '≤ 0.8×');
}
const ex = results.bench.exec;
if (ex) {
  const r = cell(ex, 'exec/noop-latency/c1', 'reexec');
  const c = cell(ex, 'exec/noop-latency/c1', 'casd');
  push('no-op action, `reexec bench` exec suite (one connection, 1-file root; latency p50, c1) vs buildbox-casd + buildbox-run-bubblewrap', num(r?.value, 'ms'), `casd ${c?.status === 'measured' ? num(c.value, 'ms') : c?.status ?? 'n/a'}`, x(r?.value / c?.value), '≤ 0.8×');
  push('no-op action latency p50 (c1) vs raw `bwrap … /bin/true`', num(r?.value, 'ms'), `bwrap ${num(r?.value / r?.baselineRatio, 'ms')}`, x(r?.baselineRatio), '≤ 1.5×');
  const t = cell(ex, `exec/noop/c${2 * cores}`, 'reexec');
  push(`no-op actions/s at concurrency ${2 * cores} (2× cores) vs raw bwrap`, num(t?.value, '/s'), `bwrap ${num(t?.value / t?.baselineRatio, '/s')}`, x(t?.baselineRatio), '≥ 0.8×');
}
if (results.casTools) {
  const t = results.casTools.times;
  const mb = `${results.casTools.sizeBytes / MiB} MiB`;
  push(`casupload of one ${mb} file vs buildbox-casd as server`, num(median(t.reexec.up) / 1000, 's'), `casd ${num(median(t.casd.up) / 1000, 's')}`, x(median(t.reexec.up) / median(t.casd.up)), '≤ 0.8×');
  push(`casdownload of it vs buildbox-casd`, num(median(t.reexec.down) / 1000, 's'), `casd ${num(median(t.casd.down) / 1000, 's')}`, x(median(t.reexec.down) / median(t.casd.down)), '≤ 0.8×');
}
const cas = results.bench.cas;
if (cas) {
  const b = cell(cas, 'cas-small/batch-update/100B/c1', 'reexec');
  const bc = cell(cas, 'cas-small/batch-update/100B/c1', 'casd');
  push('BatchUpdateBlobs 1,000 × 100 B vs raw grpc-js unary of the same bytes', num(b?.value, 'blobs/s'), `raw ${num(b?.value / b?.baselineRatio, 'blobs/s')} (casd: ${x(bc?.baselineRatio)})`, x(b?.baselineRatio), '≥ 0.3×');
  for (const c of [1, 8]) {
    const w = cell(cas, `cas-large/bytestream-write-vs-disk/1MiB/c${c}`, 'reexec');
    const wc = cell(cas, `cas-large/bytestream-write-vs-disk/1MiB/c${c}`, 'casd');
    push(`ByteStream.Write of 1 MiB blobs, ${c === 1 ? '64 in a row' : '8 at once'}, vs file write + fsync`, num(w?.value, 'MiB/s'), `disk ${num(w?.value / w?.baselineRatio, 'MiB/s')} (casd: ${x(wc?.baselineRatio)})`, x(w?.baselineRatio), '≥ 0.5×');
  }
}
if (results.rss) {
  const r = results.rss;
  push(`daemon peak RSS streaming a ${r.sizeBytes / 1024 ** 3} GiB blob in and out`, num(r.hwm / MiB, 'MiB'), `idle ${num(r.idleRss / MiB, 'MiB')}`, '', '< 200 MiB');
}

const report = { format: 'reexec-bench-goals/1', startedAt: started.toISOString(), cpus: cores, loadAvg: load, repeat: REPEAT, rows, commands, results };
save('goals.json', report);
if (args.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
else {
  const head = ['what', 'reexec', 'reference in the same run', 'ratio', 'goal'];
  const table = [head, ...rows.map((r) => [r.what, r.reexec, r.reference, r.ratio, r.goal])];
  const lines = [`host: ${cores} cores, load average ${load[0].join(' ')} at the start, ${load[1].join(' ')} at the end; medians of ${REPEAT} repetitions, each pair in one run, alternating`, ''];
  lines.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
  for (const r of rows) lines.push(`| ${[r.what, r.reexec, r.reference, r.ratio, r.goal].join(' | ')} |`);
  lines.push('', 'measured with:', ...commands.map((c) => `  ${c}`));
  process.stdout.write(`${lines.join('\n')}\n`);
}
