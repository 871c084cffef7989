import { randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeBazel7Workspace, type Bazel7Workspace } from '../helpers/bazel7-workspace.js';
import { prepareClientsRoot } from '../helpers/clients-root.js';
import { freePort, startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { parsePrometheusText } from '../helpers/prometheus-text.js';
import { describeRun } from '../helpers/run-client.js';

/**
 * Bazel 7.7 (Debian testing's bazel-bootstrap, in the clients root) with reexec as its remote
 * cache only (no executor): build a genrule, a large text output and a cc_binary, `bazel
 * clean`, build again: every action a remote cache hit. Then the same with
 * --remote_cache_compression, where the daemon's metrics must show zstd reads and writes.
 */
const clients = prepareClientsRoot();
const skipReason = clients.skip ? `skipped: ${clients.skip}` : '';
if (skipReason) console.warn(`Bazel 7 remote cache end-to-end test ${skipReason}`);

const TIMEOUT = 12 * 60_000;
const BIG_LINES = 60_000; // ~3.4 MB of text: several ByteStream chunks, compresses well

describe.skipIf(!!clients.skip)(`Bazel 7 remote cache${skipReason ? ` (${skipReason})` : ''}`, () => {
  const root = clients.root!;

  let ws: Bazel7Workspace | undefined;
  const daemons: DaemonProcess[] = [];
  // New to the servers on every run, so a first build cannot hit.
  const token = randomBytes(8).toString('hex');

  beforeAll(() => {
    ws = makeBazel7Workspace(root, 'reexec-bazel7-cache-', TIMEOUT - 60_000);
    ws.write(
      'extra/BUILD.bazel',
      [
        'genrule(',
        '    name = "token",',
        '    outs = ["token.txt"],',
        `    cmd = "echo 'token ${token}' > $@",`,
        ')',
        '',
        'genrule(',
        '    name = "big",',
        '    outs = ["big.txt"],',
        `    cmd = "i=0; while [ $$i -lt ${BIG_LINES} ]; do echo \\"line $$i of a large and very compressible output ${token}\\"; i=$$((i+1)); done > $@",`,
        ')',
        '',
        '# An empty output: Bazel never uploads the empty blob, the server must still count it present.',
        'genrule(',
        '    name = "empty",',
        '    outs = ["empty.txt"],',
        '    cmd = "touch $@",',
        ')',
        '',
      ].join('\n'),
    );
    ws.write('hello.c', `#include <stdio.h>\n#include "greeting.h"\n\nint main(void) {\n    puts(GREETING " ${token}");\n    return 0;\n}\n`);
    // Debian's Bazel 7 looks for zstd-jni's native half (Debian's libzstd-jni1) only in /usr/share/bazel;
    // without this, --remote_cache_compression fails with "no zstd-jni in java.library.path".
    ws.write('.bazelrc', `${readFileSync(join(ws.work, 'ws', '.bazelrc'), 'utf8')}startup --host_jvm_args=-Djava.library.path=/usr/share/bazel:/usr/lib/x86_64-linux-gnu\n`);
  });

  afterAll(async () => {
    // Always stop the Bazel server, even after a failure: it would outlive the test run.
    await ws?.shutdown();
    for (const d of daemons) await d.stop();
    ws?.remove();
  });

  /** A fresh daemon (an empty cache) with its metrics on a known port. */
  const startDaemon = async (name: string): Promise<{ daemon: DaemonProcess; metricsPort: number }> => {
    const metricsPort = await freePort();
    const config = join(ws!.work, `${name}.yaml`);
    writeFileSync(config, `metrics:\n  listen: 127.0.0.1:${metricsPort}\n`);
    const daemon = await startDaemonProcess({ dataDir: join(ws!.work, name), args: ['--config', config] });
    daemons.push(daemon);
    return { daemon, metricsPort };
  };

  const metrics = async (port: number) => parsePrometheusText(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());

  /** Build, check the outputs, bazel clean, build again: all remote cache hits. Returns both builds' output. */
  const buildCleanRebuild = async (flags: string[]): Promise<void> => {
    const w = ws!;
    const targets = ['//:hello', '//extra:token', '//extra:big', '//extra:empty'];
    // From a clean output base: nothing local to reuse.
    const cleanFirst = await w.bazel('clean');
    expect(cleanFirst.code, describeRun('bazel clean', cleanFirst)).toBe(0);
    const first = await w.build(...flags, ...targets);
    expect(first.code, describeRun('bazel build', first)).toBe(0);
    expect(first.output, describeRun('bazel build', first)).not.toMatch(/remote cache hit/);
    expect(first.output, describeRun('bazel build', first)).not.toMatch(/WARNING: .*(remote|cache|upload)/i);
    // bazel-bin is a symlink to an absolute path inside the clients root.
    const bin = join(root, readlinkSync(join(w.work, 'ws', 'bazel-bin')));
    const outputs = () => ({
      token: readFileSync(join(bin, 'extra', 'token.txt'), 'utf8'),
      big: readFileSync(join(bin, 'extra', 'big.txt')),
      empty: readFileSync(join(bin, 'extra', 'empty.txt')),
      hello: readFileSync(join(bin, 'hello')),
    });
    const before = outputs();
    expect(before.token).toBe(`token ${token}\n`);
    expect(before.big.toString().split('\n')).toHaveLength(BIG_LINES + 1);
    expect(before.empty.length).toBe(0);

    const clean = await w.bazel('clean');
    expect(clean.code, describeRun('bazel clean', clean)).toBe(0);

    const second = await w.build(...flags, ...targets);
    expect(second.code, describeRun('bazel build', second)).toBe(0);
    // "INFO: 8 processes: 4 internal, 4 remote cache hit." (or "N remote cache hit, M internal")
    const hits = /(\d+) remote cache hit/.exec(second.output);
    expect(hits, describeRun('second bazel build', second)).not.toBeNull();
    expect(Number(hits![1]), describeRun('second bazel build', second)).toBeGreaterThanOrEqual(5);
    expect(second.output, describeRun('second bazel build', second)).not.toMatch(/\d+ (linux-sandbox|processwrapper-sandbox|local)\b/);
    expect(second.output).not.toMatch(/WARNING: .*(remote|cache)/i);
    expect(outputs()).toEqual(before);
    // The binary from the cache runs.
    const run = await w.bazel('run', '--color=no', '--curses=no', ...flags, '//:hello');
    expect(run.code, describeRun('bazel run', run)).toBe(0);
    expect(run.output).toContain(`hello from bazel ${token}`);
  };

  it(
    '--remote_cache alone: build, bazel clean, rebuild entirely from remote cache hits',
    async () => {
      const { daemon, metricsPort } = await startDaemon('plain');
      await buildCleanRebuild([`--remote_cache=grpc://127.0.0.1:${daemon.port}`]);
      const m = await metrics(metricsPort);
      expect(m.value('reexec_cas_compressed_transfers_total')).toBe(0);
      expect(daemon.running(), `reexec died:\n${daemon.output()}`).toBe(true);
      expect(daemon.errorLines()).toEqual([]);
    },
    TIMEOUT,
  );

  it(
    '--remote_cache_compression: the same, with blobs written and read as zstd',
    async () => {
      const { daemon, metricsPort } = await startDaemon('zstd');
      // Bazel 7 compresses only blobs of at least --experimental_remote_cache_compression_threshold bytes (default 100).
      await buildCleanRebuild([`--remote_cache=grpc://127.0.0.1:${daemon.port}`, '--remote_cache_compression']);
      const m = await metrics(metricsPort);
      const bytes = (direction: string, form: string) => m.value('reexec_cas_compressed_transfer_bytes_total', { compressor: 'zstd', direction, form });
      expect(m.value('reexec_cas_compressed_transfers_total', { direction: 'write' })).toBeGreaterThanOrEqual(3);
      expect(m.value('reexec_cas_compressed_transfers_total', { direction: 'read' })).toBeGreaterThanOrEqual(3);
      // The large text output went both ways compressed, several times smaller.
      for (const direction of ['write', 'read']) expect(bytes(direction, 'uncompressed')).toBeGreaterThan(3 * bytes(direction, 'compressed'));
      expect(bytes('read', 'uncompressed')).toBeGreaterThan(BIG_LINES * 50);
      expect(daemon.running(), `reexec died:\n${daemon.output()}`).toBe(true);
      expect(daemon.errorLines()).toEqual([]);
    },
    TIMEOUT,
  );
});
