import { randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/reapi-client.js';
import { statusFromMessage } from '../../src/services/admin-messages.js';
import type { UpstreamStatus } from '../../src/status/status-snapshot.js';
import { makeBazel7Workspace, type Bazel7Workspace } from '../helpers/bazel7-workspace.js';
import { prepareClientsRoot } from '../helpers/clients-root.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { describeRun } from '../helpers/run-client.js';
import { call } from '../helpers/storage.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Bazel 7.7 with --remote_cache pointing at a workstation reexec in front of an upstream
 * reexec: the first workstation writes the build's results behind to the upstream; a fresh
 * workstation (an empty data dir) then serves a clean rebuild entirely as remote cache hits,
 * read through from the upstream.
 */
const clients = prepareClientsRoot();
const skipReason = clients.skip ? `skipped: ${clients.skip}` : '';
if (skipReason) console.warn(`Bazel 7 upstream end-to-end test ${skipReason}`);

const TIMEOUT = 12 * 60_000;

async function upstreamStatus(port: number): Promise<UpstreamStatus> {
  const c = connect(`127.0.0.1:${port}`);
  try {
    return statusFromMessage(await call(c.admin, 'GetStatus', {})).upstream!;
  } finally {
    c.close();
  }
}

describe.skipIf(!!clients.skip)(`Bazel 7 remote cache through a workstation reexec${skipReason ? ` (${skipReason})` : ''}`, () => {
  const root = clients.root!;
  let ws: Bazel7Workspace | undefined;
  const daemons: DaemonProcess[] = [];
  const token = randomBytes(8).toString('hex');

  beforeAll(() => {
    ws = makeBazel7Workspace(root, 'reexec-bazel7-upstream-', TIMEOUT - 60_000);
    ws.write('extra/BUILD.bazel', ['genrule(', '    name = "token",', '    outs = ["token.txt"],', `    cmd = "echo 'token ${token}' > $@",`, ')', ''].join('\n'));
    ws.write('hello.c', `#include <stdio.h>\n#include "greeting.h"\n\nint main(void) {\n    puts(GREETING " ${token}");\n    return 0;\n}\n`);
  });

  afterAll(async () => {
    await ws?.shutdown();
    for (const d of daemons) await d.stop();
    ws?.remove();
  });

  const start = async (name: string, args: string[] = []): Promise<DaemonProcess> => {
    const d = await startDaemonProcess({ dataDir: join(ws!.work, name), args });
    daemons.push(d);
    return d;
  };

  it(
    'a clean rebuild through a fresh workstation is all remote cache hits, read through from the upstream',
    async () => {
      const w = ws!;
      const upstream = await start('upstream');
      const first = await start('first', ['--upstream', `grpc://127.0.0.1:${upstream.port}`]);
      const targets = ['//:hello', '//extra:token'];
      const clean = await w.bazel('clean');
      expect(clean.code, describeRun('bazel clean', clean)).toBe(0);
      const build = await w.build(`--remote_cache=grpc://127.0.0.1:${first.port}`, ...targets);
      expect(build.code, describeRun('bazel build', build)).toBe(0);
      expect(build.output).not.toMatch(/remote cache hit/);
      await waitFor('the first workstation to write the build behind to the upstream', async () => {
        const s = await upstreamStatus(first.port);
        return s.queue && s.queue.blobs + s.queue.actionResults === 0 && s.queue.actionResults === 0 && s.queue.done > 0;
      });
      expect((await upstreamStatus(first.port)).queue).toMatchObject({ dropped: 0, failed: 0 });
      const bin = join(root, readlinkSync(join(w.work, 'ws', 'bazel-bin')));
      const tokenBefore = readFileSync(join(bin, 'extra', 'token.txt'), 'utf8');
      expect(tokenBefore).toBe(`token ${token}\n`);

      const fresh = await start('fresh', ['--upstream', `grpc://127.0.0.1:${upstream.port}`]);
      expect(await w.bazel('clean')).toMatchObject({ code: 0 });
      const again = await w.build(`--remote_cache=grpc://127.0.0.1:${fresh.port}`, ...targets);
      const why = describeRun('bazel build through the fresh workstation', again);
      expect(again.code, why).toBe(0);
      const hits = /(\d+) remote cache hit/.exec(again.output);
      expect(hits, why).not.toBeNull();
      expect(Number(hits![1]), why).toBeGreaterThanOrEqual(3);
      expect(again.output, why).not.toMatch(/\d+ (linux-sandbox|processwrapper-sandbox|local)\b/);
      expect(readFileSync(join(bin, 'extra', 'token.txt'), 'utf8')).toBe(tokenBefore);
      const s = await upstreamStatus(fresh.port);
      expect(s.ac.upstream, JSON.stringify(s)).toBeGreaterThanOrEqual(3);
      expect(s.cas.upstream).toBeGreaterThan(0);
      const run = await w.bazel('run', '--color=no', '--curses=no', `--remote_cache=grpc://127.0.0.1:${fresh.port}`, '//:hello');
      expect(run.code, describeRun('bazel run', run)).toBe(0);
      expect(run.output).toContain(`hello from bazel ${token}`);
      for (const d of [upstream, first, fresh]) expect(d.errorLines()).toEqual([]);
    },
    TIMEOUT,
  );
});
