import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bazelSkipReason as skipReason, grpcEndpoint, makeBazelWorkspace, type BazelWorkspace } from '../helpers/bazel-workspace.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { describeRun } from '../helpers/run-client.js';

/**
 * Bazel 4.2 (Debian 12's `bazel-bootstrap`) with reexec as its remote cache: build genrules
 * (uploads to the action cache and CAS), `bazel clean`, build again: every action must be a
 * remote cache hit and the outputs the same. Bazel uses Capabilities, ActionCache Get/Update,
 * FindMissingBlobs, BatchUpdateBlobs and ByteStream.
 */
if (skipReason) console.warn(`Bazel remote cache end-to-end test ${skipReason}`);

const TIMEOUT = 10 * 60_000;
const BIG_BYTES = 3 * 1024 * 1024 + 17; // several ByteStream chunks, above the batch limit

describe.skipIf(!!skipReason)(`Bazel 4.2 remote cache${skipReason ? ` (${skipReason})` : ''}`, () => {
  let daemon: DaemonProcess | undefined;
  let ws: BazelWorkspace | undefined;
  let workspace: string;
  // New to the server on every run, so the first build cannot hit.
  const token = randomBytes(8).toString('hex');

  const bazel = (...args: string[]) => ws!.bazel(...args);
  const build = () => ws!.build(`--remote_cache=${grpcEndpoint(daemon!.port)}`, '//...');

  beforeAll(async () => {
    ws = makeBazelWorkspace('reexec-bazel-', TIMEOUT - 30_000);
    workspace = ws.workspace;
    daemon = await startDaemonProcess({ dataDir: join(ws.tmp, 'server') });
    writeFileSync(
      join(workspace, 'BUILD'),
      `
genrule(
    name = "greeting",
    outs = ["greeting.txt"],
    cmd = "echo 'hello ${token}' > $@",
)

genrule(
    name = "shout",
    srcs = [":greeting"],
    outs = ["shout.txt"],
    cmd = "tr a-z A-Z < $(location :greeting) > $@",
)

genrule(
    name = "big",
    outs = ["big.bin"],
    cmd = "i=0; while [ $$i -lt ${Math.floor(BIG_BYTES / 1024)} ]; do printf '%01023d\\\\n' $$i; i=$$((i+1)); done > $@; printf '${token}${token}' | head -c ${BIG_BYTES % 1024} >> $@",
)

# An empty output: Bazel never uploads the empty blob, the server must still count it present.
genrule(
    name = "empty",
    outs = ["empty.txt"],
    cmd = "touch $@",
)

genrule(
    name = "two_outputs",
    srcs = [":shout", ":empty"],
    outs = ["a.txt", "sub/b.txt"],
    cmd = "cat $(location :shout) > $(location a.txt); wc -c < $(location :empty) > $(location sub/b.txt)",
)
`,
    );
  });

  afterAll(async () => {
    // Always stop the Bazel server, even after a failure: it would outlive the test run.
    await ws?.shutdown();
    await daemon?.stop();
    ws?.remove();
  });

  const outputs = () => {
    const bin = join(workspace, 'bazel-bin');
    return {
      greeting: readFileSync(join(bin, 'greeting.txt'), 'utf8'),
      shout: readFileSync(join(bin, 'shout.txt'), 'utf8'),
      big: readFileSync(join(bin, 'big.bin')),
      empty: readFileSync(join(bin, 'empty.txt'), 'utf8'),
      a: readFileSync(join(bin, 'a.txt'), 'utf8'),
      b: readFileSync(join(bin, 'sub', 'b.txt'), 'utf8'),
    };
  };
  const expectCorrect = (o: ReturnType<typeof outputs>) => {
    expect(o.greeting).toBe(`hello ${token}\n`);
    expect(o.shout).toBe(`HELLO ${token.toUpperCase()}\n`);
    expect(o.big.length).toBe(BIG_BYTES);
    expect(o.big.subarray(0, 1024).toString()).toBe(`${'0'.repeat(1023)}\n`);
    expect(o.empty).toBe('');
    expect(o.a).toBe(o.shout);
    expect(o.b.trim()).toBe('0');
  };

  it(
    'fills the cache on the first build and serves every action from it after bazel clean',
    async () => {
      const d = daemon!;
      const first = await build();
      expect(first.code, describeRun('bazel build', first)).toBe(0);
      expect(first.output, describeRun('bazel build', first)).not.toMatch(/remote cache hit/);
      expect(first.output, describeRun('bazel build', first)).not.toMatch(/WARNING: .*(remote|cache)/i);
      const before = outputs();
      expectCorrect(before);

      const clean = await bazel('clean');
      expect(clean.code, describeRun('bazel clean', clean)).toBe(0);

      const second = await build();
      expect(second.code, describeRun('bazel build', second)).toBe(0);
      // "INFO: 6 processes: 5 remote cache hit, 1 internal."
      const hits = /(\d+) remote cache hit/.exec(second.output);
      expect(hits, describeRun('second bazel build', second)).not.toBeNull();
      expect(Number(hits![1])).toBe(5);
      expect(second.output).not.toMatch(/\d+ (linux-sandbox|processwrapper-sandbox|local)\b/);
      expect(second.output).not.toMatch(/WARNING: .*(remote|cache)/i);
      const after = outputs();
      expectCorrect(after);
      expect(after).toEqual(before);

      expect(d.running(), `reexec died:\n${d.output()}`).toBe(true);
      expect(d.errorLines()).toEqual([]);
    },
    TIMEOUT,
  );
});
