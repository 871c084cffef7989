import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/reapi-client.js';
import { statusFromMessage } from '../../src/services/admin-messages.js';
import type { UpstreamStatus } from '../../src/status/status-snapshot.js';
import { bst2UserConfig, makeBst2Project, runBst2 } from '../helpers/bst2-project.js';
import { makeClientsWork, prepareClientsRoot } from '../helpers/clients-root.js';
import { listOperations } from '../helpers/daemon-operations.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon-process.js';
import { describeRun, isExecutable, removeTree } from '../helpers/run-client.js';
import { call } from '../helpers/storage.js';
import { waitFor } from '../helpers/wait.js';

/**
 * BuildStream 2.8 against a workstation reexec (A) standing in front of an upstream reexec
 * (U), started as users start it: `reexec start --upstream grpc://…`. Build on A (remote
 * execution on A, artifacts pushed to A and written behind to U), wipe A's data dir and
 * BuildStream's local cache, build again: the artifact comes from U through A, nothing is
 * rebuilt.
 */
const clients = isExecutable('/usr/bin/bwrap') ? prepareClientsRoot() : { skip: 'install the Debian package bubblewrap (reexec runs actions in bwrap)' };
const skipReason = clients.skip ? `skipped: ${clients.skip}` : '';
if (skipReason) console.warn(`BuildStream 2 upstream end-to-end test ${skipReason}`);

const TIMEOUT = 5 * 60_000;

async function upstreamStatus(port: number): Promise<UpstreamStatus> {
  const c = connect(`127.0.0.1:${port}`);
  try {
    return statusFromMessage(await call(c.admin, 'GetStatus', {})).upstream!;
  } finally {
    c.close();
  }
}

describe.skipIf(!!clients.skip)(`BuildStream 2.8 through a workstation reexec in front of an upstream${skipReason ? ` (${skipReason})` : ''}`, () => {
  const root = clients.root!;
  let upstream: DaemonProcess | undefined;
  let ws: DaemonProcess | undefined;
  let work: string;
  let inside: string;
  let port: number;
  const token = randomBytes(8).toString('hex');
  const bst = (...args: string[]) => runBst2(root, inside, 'buildstream.conf', args, TIMEOUT - 10_000);
  const startWorkstation = (listen: string) => startDaemonProcess({ dataDir: join(work, 'workstation'), listen: [listen], args: ['--upstream', `grpc://127.0.0.1:${upstream!.port}`] });

  beforeAll(async () => {
    ({ work, inside } = makeClientsWork(root, 'reexec-bst2-upstream-'));
    upstream = await startDaemonProcess({ dataDir: join(work, 'upstream') });
    ws = await startWorkstation('127.0.0.1:0');
    port = ws.port;
    const project = join(work, 'project');
    makeBst2Project(root, project, 'reexec-upstream');
    writeFileSync(
      join(project, 'elements', 'hello.bst'),
      [
        'kind: manual',
        'build-depends:',
        '- base.bst',
        'config:',
        '  install-commands:',
        '  - mkdir -p %{install-root}/usr/share/hello',
        `  - echo "built once ${token}" > %{install-root}/usr/share/hello/hello.txt`,
        '',
      ].join('\n'),
    );
    const server = `{url: "http://127.0.0.1:${port}", push: true}`;
    writeFileSync(join(work, 'buildstream.conf'), bst2UserConfig(inside, { artifacts: server, sourceCaches: server, remoteExecution: { service: `{url: "http://127.0.0.1:${port}"}`, actionCache: server } }));
  }, 120_000);

  afterAll(async () => {
    await ws?.stop();
    await upstream?.stop();
    if (work) removeTree(work);
  });

  it(
    'builds on the workstation, whose uploads reach the upstream; with the workstation wiped, the artifact comes from the upstream through it',
    async () => {
      const build = await bst('build', 'hello.bst');
      const why = describeRun('bst build hello.bst', build);
      expect(build.code, why).toBe(0);
      expect(build.output, why).toMatch(/hello\.bst.*Waiting for the remote build to complete/);
      expect(build.output, why).toMatch(/push:hello\.bst.*Pushed artifact/);
      const status = await waitFor('the workstation to write everything behind to the upstream', async () => {
        const s = await upstreamStatus(port);
        return s.queue && s.queue.blobs + s.queue.actionResults + s.queue.assets === 0 && s.queue.done > 0 ? s : undefined;
      });
      expect(status).toMatchObject({ state: 'up', queue: { dropped: 0, failed: 0 } });
      expect(status.queue!.assets).toBe(0);
      expect(status.bytesUp).toBeGreaterThan(0);

      // The workstation loses everything: its data dir and BuildStream's local cache.
      await ws!.stop();
      rmSync(join(work, 'workstation'), { recursive: true, force: true });
      removeTree(join(work, 'cache'));
      ws = await startWorkstation(`127.0.0.1:${port}`);
      const opsBefore = (await listOperations(port)).length;

      const again = await bst('build', 'hello.bst');
      const why2 = describeRun('bst build hello.bst (wiped workstation)', again);
      expect(again.code, why2).toBe(0);
      expect(again.output, why2).toMatch(/Pulled artifact [0-9a-f]+ <- http:\/\/127\.0\.0\.1/);
      expect(again.output, why2).toMatch(/Build Queue:\s+processed 0\b/);
      expect(again.output, why2).not.toMatch(/Waiting for the remote build/);
      expect((await listOperations(port)).length).toBe(opsBefore);
      const through = await upstreamStatus(port);
      expect(through.assets.upstream).toBeGreaterThan(0);
      expect(through.cas.upstream).toBeGreaterThan(0);
      expect(through.bytesDown).toBeGreaterThan(0);

      const co = await bst('artifact', 'checkout', 'hello.bst', '--directory', `${inside}/checkout`);
      expect(co.code, describeRun('bst artifact checkout', co)).toBe(0);
      expect(readFileSync(join(work, 'checkout', 'usr', 'share', 'hello', 'hello.txt'), 'utf8')).toBe(`built once ${token}\n`);
      expect(ws!.errorLines()).toEqual([]);
      expect(upstream!.errorLines()).toEqual([]);
    },
    TIMEOUT * 2,
  );
});
