#!/usr/bin/env node
// Bazel end to end (a benchmark, not a test): a build of N independent small genrules
// (`echo i > $@`), locally in Bazel's sandbox and with --remote_executor on a reexec daemon
// (`reexec start`, a process of its own, default settings, genrules in the host-tools sandbox),
// alternating local, remote, local, remote ... in one run. Debian 12's Bazel 4.2
// (/usr/bin/bazel, package bazel-bootstrap).
//
// What it measures is execution, not cache hits: each side has its own workspace and output
// base (so each keeps a warm Bazel server and its analysis), `bazel clean` before every timed
// build (Bazel's action cache and outputs go), no disk cache, and remotely
// --noremote_accept_cached (every Execute skips the action cache lookup) and
// --noremote_upload_local_results. The time is Bazel's own "Elapsed time" of the build.
//
//   npm run build && node scripts/bench-bazel.js [--rounds 3] [--targets 100] [--jobs N] [--json]
import { mkdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { execFile, spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { scratchDir } from './lib/dist.js';
import { median, startReexec } from './lib/peers.js';

const BAZEL = '/usr/bin/bazel';
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    targets: { type: 'string', default: '100' },
    jobs: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const fail = (msg) => {
  process.stderr.write(`bench-bazel: ${msg}\n`);
  process.exit(2);
};
const ROUNDS = Number(args.rounds);
const TARGETS = Number(args.targets);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) fail('--rounds takes a whole number from 1');
if (!Number.isInteger(TARGETS) || TARGETS < 1) fail('--targets takes a whole number from 1');
if (!existsSync(BAZEL)) fail(`${BAZEL} is missing: install the Debian package bazel-bootstrap`);
const info = (line) => process.stderr.write(`bench-bazel: ${line}\n`);

const tmp = scratchDir('reexec-bench-bazel-');
const home = join(tmp, 'home');
mkdirSync(home);

function run(cwd, outputRoot, argv) {
  return new Promise((resolve, reject) => {
    const child = spawn(BAZEL, [`--output_user_root=${outputRoot}`, '--nohome_rc', ...argv], { cwd, env: { ...process.env, HOME: home, LANG: 'C.UTF-8' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (b) => (output = (output + b).slice(-20000)));
    child.stderr.on('data', (b) => (output = (output + b).slice(-20000)));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
  });
}

/** A workspace of TARGETS genrules, with its own output root. */
function workspace(name) {
  const ws = join(tmp, name, 'ws');
  mkdirSync(ws, { recursive: true });
  writeFileSync(join(ws, 'WORKSPACE'), '');
  const rules = Array.from({ length: TARGETS }, (_, i) => `genrule(name = "g${i}", outs = ["g${i}.txt"], cmd = "echo ${i} > $@")`);
  writeFileSync(join(ws, 'BUILD'), `${rules.join('\n')}\n`);
  return { ws, outputRoot: join(tmp, name, 'output-root') };
}

const common = ['--nosandbox_debug', '--color=no', '--curses=no', '--show_progress_rate_limit=60', ...(args.jobs ? [`--jobs=${args.jobs}`] : [])];
const daemonDir = scratchDir('reexec-bench-bazel-data-');
const daemon = await startReexec(daemonDir);
const sides = {
  local: { ...workspace('local'), flags: ['--spawn_strategy=sandboxed'], seconds: [] },
  remote: {
    ...workspace('remote'),
    flags: [`--remote_executor=${daemon.url}`, '--remote_default_exec_properties=reexec-sandbox=host-tools', '--noremote_accept_cached', '--noremote_upload_local_results', '--remote_timeout=120'],
    seconds: [],
  },
};
let version = '';
try {
  version = (await run(sides.local.ws, sides.local.outputRoot, ['--version'])).output.match(/bazel (\S+)/)?.[1] ?? 'unknown';
  // Debian's bazel-bootstrap says "no_version": its package version says more.
  if (version === 'no_version') version = `${(await new Promise((resolve) => execFile('dpkg-query', ['-W', '-f=${Version}', 'bazel-bootstrap'], (err, stdout) => resolve(err ? '' : stdout.trim())))) || 'unknown'} (Debian bazel-bootstrap)`;
  // Warm up both servers (and reexec's first actions), untimed.
  for (const [name, s] of Object.entries(sides)) {
    const r = await run(s.ws, s.outputRoot, ['build', ...common, ...s.flags, '//:all']);
    if (r.code !== 0) throw new Error(`the ${name} warm-up build failed:\n${r.output}`);
  }
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, s] of Object.entries(sides)) {
      const c = await run(s.ws, s.outputRoot, ['clean']);
      if (c.code !== 0) throw new Error(`bazel clean (${name}) failed:\n${c.output}`);
      const r = await run(s.ws, s.outputRoot, ['build', ...common, ...s.flags, '//:all']);
      if (r.code !== 0) throw new Error(`the ${name} build failed:\n${r.output}`);
      const elapsed = /Elapsed time: ([0-9.]+)s/.exec(r.output);
      const executed = /([0-9,]+) total actions?/.exec(r.output) ?? /([0-9,]+) process(?:es)?/.exec(r.output);
      if (!elapsed) throw new Error(`no "Elapsed time" in the ${name} build's output:\n${r.output}`);
      s.seconds.push(Number(elapsed[1]));
      if (/remote cache hit/.test(r.output)) throw new Error(`the ${name} build took results from a cache: ${r.output.split('\n').find((l) => /processes?:/.test(l))}`);
      info(`round ${round}/${ROUNDS}, ${name}: ${elapsed[1]} s (${r.output.split('\n').find((l) => /processes?:/.test(l))?.trim() ?? executed?.[0] ?? ''})`);
    }
  }
} finally {
  for (const s of Object.values(sides)) await run(s.ws, s.outputRoot, ['shutdown']).catch(() => undefined);
  await daemon.stop();
  rmSync(daemonDir, { recursive: true, force: true });
  rmSync(tmp, { recursive: true, force: true });
}

const result = {
  format: 'reexec-bench-bazel/1',
  bazelVersion: version,
  targets: TARGETS,
  rounds: ROUNDS,
  loadAvg: loadavg().map((x) => Number(x.toFixed(2))),
  measures: 'execution: bazel clean before every build, no disk cache, --noremote_accept_cached and --noremote_upload_local_results remotely; Bazel\'s "Elapsed time"',
  local: { flags: sides.local.flags, seconds: sides.local.seconds, medianSeconds: median(sides.local.seconds) },
  remote: { flags: sides.remote.flags, seconds: sides.remote.seconds, medianSeconds: median(sides.remote.seconds) },
  ratio: median(sides.remote.seconds) / median(sides.local.seconds),
};
if (args.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
else {
  process.stdout.write(
    `Bazel ${version}, ${TARGETS} independent genrules, ${ROUNDS} rounds alternating (${result.measures}):\n` +
      `  local sandboxed       median ${result.local.medianSeconds.toFixed(2)} s  (${result.local.seconds.join(', ')})\n` +
      `  remote on reexec      median ${result.remote.medianSeconds.toFixed(2)} s  (${result.remote.seconds.join(', ')})\n` +
      `  remote / local        ${result.ratio.toFixed(2)}×\n`,
  );
}
