import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from '../../src/client/reapi-client.js';
import { createTlsSetup, type TlsSetup } from '../../src/host/tls-setup.js';
import { bst2UserConfig, makeBst2Project, runBst2 } from '../helpers/bst2-project.js';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Digest } from '../../src/digest/digest.js';
import { type BotHost, createNetNs, type NetNs, killIfAlive, processesWithArgs, startBotHost, waitFor } from '../helpers/bots.js';
import { makeClientsWork, prepareClientsRoot } from '../helpers/clients-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { uploadBusyboxRoot } from '../helpers/action-batch.js';
import { execute, readBlob, uploadAction } from '../helpers/exec-client.js';
import { describeRun, isExecutable, removeTree } from '../helpers/run-client.js';
import { call } from '../helpers/storage.js';
import type { StatusSnapshot } from '../../src/status/status-snapshot.js';
import { statusFromMessage } from '../../src/services/admin-messages.js';

/**
 * The Remote Workers (Bots) API with the real buildbox-worker, buildbox-casd and
 * buildbox-run-bubblewrap of the clients root: bots take reexec's work as leases.
 */
const clients = isExecutable('/usr/bin/bwrap') ? prepareClientsRoot() : { skip: 'install the Debian package bubblewrap' };
const skipReason = clients.skip ? `skipped: ${clients.skip}` : '';
if (skipReason) console.warn(`Bots API end-to-end test ${skipReason}`);

const X86 = [['OSFamily', 'linux'], ['ISA', 'x86-64']] as Array<[string, string]>;

describe.skipIf(!!clients.skip)(`Bots API with buildbox-worker${skipReason ? ` (${skipReason})` : ''}`, () => {
  const root = clients.root!;
  let work: string;
  let inside: string;
  const bots: BotHost[] = [];
  const bot = async (d: TestDaemon, id: string, platform = X86, extra: { token?: string; casToken?: string; url?: string; serverCert?: string; clientCert?: { cert: string; key: string } } = {}): Promise<BotHost> => {
    const b = await startBotHost(root, work, inside, { url: extra.url ?? `http://${d.address}`, id, platform, ...extra });
    bots.push(b);
    return b;
  };
  const connected = (d: TestDaemon, id: string) => waitFor(`bot ${id} to connect`, () => d.daemon.execution!.bots.list().find((b) => b.botId === id));

  beforeAll(() => {
    ({ work, inside } = makeClientsWork(root, 'reexec-bots-'));
  });
  afterAll(async () => {
    await Promise.all(bots.map((b) => b.stop()));
    removeTree(work);
  }, 60_000);

  describe('a pure controller (execution.pools: [])', () => {
    let d: TestDaemon;
    let rootDigest: Digest;
    beforeAll(async () => {
      d = await startTestDaemon((c) => {
        c.execution.pools = [];
        // buildbox-worker reports every 4 s or so while it runs an action: well above that.
        c.execution.bots.sessionTimeoutSeconds = 12;
      });
      rootDigest = (await uploadBusyboxRoot(d.clients)).tree.root;
    });
    afterAll(async () => {
      await Promise.all(bots.splice(0).map((b) => b.stop()));
      await d.stop();
    }, 60_000);

    it('refuses an action at once while no bot is connected, then runs it on a bot and caches the result', async () => {
      const token = randomBytes(6).toString('hex');
      const action = await uploadAction(d.clients, rootDigest, { args: ['sh', '-c', `echo ${token} > out; echo hi from $(uname -m)`], outputPaths: ['out'], platform: X86 });
      const refused = await execute(d.clients, action);
      expect(refused.error?.code).toBe(9); // FAILED_PRECONDITION
      expect(refused.error?.details).toMatch(/no local worker pools.*no bot is connected/);

      await bot(d, 'bot-a');
      await connected(d, 'bot-a');
      // Status (reexec status --json) and Prometheus show the bot.
      const status = statusFromMessage(await call(d.clients.admin, 'GetStatus', {}));
      expect(status.execution!.bots).toEqual([expect.objectContaining({ botId: 'bot-a', properties: ['OSFamily=linux', 'ISA=x86-64'], status: 'OK', lease: null })]);
      expect(status.execution!.pools.map((p) => [p.name, p.slots.map((x) => x.slot)])).toEqual([['bots', ['bot-a']]]);
      const metrics = await d.daemon.telemetry.registry.metrics();
      expect(metrics).toMatch(/reexec_bot_info\{bot="bot-a",host="[^"]+",properties="OSFamily=linux,ISA=x86-64"\} 1/);
      const run = await execute(d.clients, action);
      expect(run.error).toBeUndefined();
      expect(run.response?.status?.code ?? 0, `${run.response?.status?.message}\n${bots[0]!.output().slice(-3000)}\nCASD\n${bots[0]!.casdOutput().slice(-3000)}`).toBe(0);
      const result = run.response!.result!;
      expect(result.exitCode).toBe(0);
      expect(result.executionMetadata?.worker).toContain('bot-a');
      expect((await readBlob(d.clients, result.stdoutDigest)).toString()).toBe('hi from x86_64\n');
      const out = result.outputFiles!.find((f) => f.path === 'out');
      expect((await readBlob(d.clients, out?.digest)).toString()).toBe(`${token}\n`);
      // Cached like a local result.
      const again = await execute(d.clients, action);
      expect(again.response?.cachedResult).toBe(true);
      const cached: any = await call(d.clients.actionCache, 'GetActionResult', { actionDigest: action.toProto() });
      expect(cached.exitCode).toBe(0);
    });

    it('a bot killed mid-action loses its lease: the action runs again on another bot, and completes once', async () => {
      const slow = `900.${Math.floor(Math.random() * 1e6)}`;
      const action = await uploadAction(d.clients, rootDigest, { args: ['sh', '-c', `sleep ${slow}; echo ran on the second try > out`], outputPaths: ['out'], platform: X86 });
      const a = bots.find((b) => b.id === 'bot-a')!;
      const running = execute(d.clients, action);
      const first = await waitFor('the action to run on bot-a', () => processesWithArgs(['sleep', slow])[0]);
      const ex = d.daemon.execution!.scheduler.list().find((o) => o.job.actionDigest.equals(action))!.execution;
      expect(ex.worker).toBe('bot bot-a');
      // The machine dies: the worker, its runner and the action.
      await a.kill();
      // (it may already be gone with its sandbox: bubblewrap's --die-with-parent)
      for (const pid of processesWithArgs(['sleep', slow])) killIfAlive(pid);
      // A SIGKILLed process goes when the kernel gets to it: wait for that, do not assume it.
      await waitFor('the killed action to be gone', () => !processesWithArgs(['sleep', slow]).includes(first));
      await bot(d, 'bot-b');
      // Once bot-a's session has expired, bot-b gets the lease; let its sleep go on to the echo.
      const second = await waitFor('the action to run again on bot-b', () => processesWithArgs(['sleep', slow])[0]);
      expect(ex.worker).toBe('bot bot-b');
      expect(ex.attempts).toBe(2);
      process.kill(second, 'SIGKILL');
      const run = await running;
      expect(run.error).toBeUndefined();
      expect(run.response?.status?.code ?? 0).toBe(0);
      const result = run.response!.result!;
      expect(result.exitCode).toBe(0);
      expect(result.executionMetadata?.worker).toContain('bot-b');
      const out = result.outputFiles!.find((f) => f.path === 'out');
      expect((await readBlob(d.clients, out?.digest)).toString()).toBe('ran on the second try\n');
      expect(d.daemon.execution!.bots.list().find((b) => b.botId === 'bot-b')?.leasesCompleted).toBe(1);
      await waitFor("bot-a's session to expire", () => !d.daemon.execution!.bots.list().some((b) => b.botId === 'bot-a'));
    });

    it('cancel of a leased action reaches the bot: its process tree goes, and the operation ends CANCELLED', async () => {
      const slow = `900.${Math.floor(Math.random() * 1e6)}`;
      const action = await uploadAction(d.clients, rootDigest, { args: ['sh', '-c', `sleep ${slow}`], platform: X86, doNotCache: true });
      const running = execute(d.clients, action);
      await waitFor('the action to run on a bot', () => processesWithArgs(['sleep', slow])[0]);
      const op = d.daemon.execution!.scheduler.list().find((o) => o.job.actionDigest.equals(action))!;
      expect(op.execution.worker).toMatch(/^bot /);
      await call(d.clients.operations, 'CancelOperation', { name: op.name });
      const run = await running;
      expect(run.response?.status?.code).toBe(1); // CANCELLED
      await waitFor('the bot to kill the action', () => processesWithArgs(['sleep', slow]).length === 0);
      // The bot takes work again afterwards.
      const next = await uploadAction(d.clients, rootDigest, { args: ['sh', '-c', 'echo after the cancel'], platform: X86, doNotCache: true });
      const after = await execute(d.clients, next);
      expect(after.response?.result?.exitCode).toBe(0);
    });
  });

  describe('bots next to local slots, over mutual TLS with tokens', () => {
    let d: TestDaemon;
    let tc: ReturnType<typeof connect>;
    let rootDigest: Digest;
    let tls: TlsSetup;
    let url: string;
    const botToken = `bot-${randomBytes(12).toString('hex')}`;
    const readOnlyToken = `ro-${randomBytes(12).toString('hex')}`;
    const tlsBot = (id: string, platform: Array<[string, string]>, token: string) =>
      bot(d, id, platform, { token, casToken: botToken, url, serverCert: tls.serverCert.slice(root.length), clientCert: { cert: tls.clientCert.slice(root.length), key: tls.clientKey.slice(root.length) } });
    beforeAll(async () => {
      tls = await createTlsSetup(join(work, 'tls'), { listen: ['127.0.0.1:0'] });
      const clientToken = `client-${randomBytes(12).toString('hex')}`;
      const tokens = join(work, 'tls-tokens.yaml');
      writeFileSync(tokens, [`${clientToken}: read, write, execute`, `${botToken}: read, write, worker`, `${readOnlyToken}: read`, ''].join('\n'), { mode: 0o600 });
      d = await startTestDaemon((c) => {
        // buildbox-worker reports every 4 s or so while it runs an action: well above that.
        c.execution.bots.sessionTimeoutSeconds = 12;
        c.tls = { cert: tls.serverCert, key: tls.serverKey, clientCa: tls.caCert };
        c.auth.tokenFile = tokens;
      });
      url = `https://${d.address}`;
      tc = connect(url, {}, { serverCa: readFileSync(tls.caCert), clientCert: readFileSync(tls.clientCert), clientKey: readFileSync(tls.clientKey), token: clientToken });
      rootDigest = (await uploadBusyboxRoot(tc)).tree.root;
    });
    afterAll(async () => {
      await Promise.all(bots.splice(0).map((b) => b.stop()));
      tc?.close();
      await d?.stop();
    }, 60_000);

    it('a property only a bot offers is refused until such a bot connects, then routed to it alone', async () => {
      const gpu: Array<[string, string]> = [['OSFamily', 'linux'], ['pool', 'gpu']];
      const gpuAction = (i: number) => uploadAction(tc, rootDigest, { args: ['sh', '-c', `echo gpu ${i}`], platform: gpu, doNotCache: true });
      const plainAction = (i: number) => uploadAction(tc, rootDigest, { args: ['sh', '-c', `echo plain ${i}`], platform: X86, doNotCache: true });
      const refused = await execute(tc, await gpuAction(0));
      expect(refused.error?.code).toBe(9);
      expect(refused.error?.details).toContain('pool="gpu"');

      await tlsBot('bot-gpu', gpu, botToken);
      await connected(d, 'bot-gpu');
      const runs = await Promise.all([...[1, 2, 3].map(async (i) => execute(tc, await gpuAction(i))), ...[1, 2, 3].map(async (i) => execute(tc, await plainAction(i)))]);
      for (const r of runs) expect(r.response?.result?.exitCode, JSON.stringify(r.error ?? r.response?.status)).toBe(0);
      expect(runs.slice(0, 3).map((r) => r.response!.result!.executionMetadata!.worker)).toEqual(['bot-gpu', 'bot-gpu', 'bot-gpu']);
      for (const r of runs.slice(3)) expect(r.response!.result!.executionMetadata!.worker).toMatch(/^reexec\/native-/);
    });

    it('refuses a bot with a wrong token or a token without the worker right', async () => {
      for (const [id, token, why] of [
        ['bot-bad', `bad-${randomBytes(12).toString('hex')}`, /access token is not valid on this server/],
        ['bot-readonly', readOnlyToken, /CreateBotSession needs the "worker" right/],
      ] as const) {
        const b = await tlsBot(id, X86, token);
        await waitFor(`bot ${id} to be refused`, () => why.test(b.output()));
        expect(d.daemon.execution!.bots.list().find((x) => x.botId === id)).toBeUndefined();
        await b.kill();
      }
    });
  });

  // Under CI a missing `ip` fails the test (createNetNs throws) rather than skipping it.
  const noIp = !process.env.CI && !isExecutable('/usr/sbin/ip') && !isExecutable('/sbin/ip') && !isExecutable('/usr/bin/ip');
  describe.skipIf(noIp)(`a bot on another host (its own network namespace) serving a BuildStream 2.8 build alone${noIp ? ' (skipped: install iproute2)' : ''}`, () => {
    let d: TestDaemon;
    let ns: NetNs;
    let nsTls: TlsSetup;
    beforeAll(async () => {
      ns = createNetNs();
      // Another machine is admitted with a client certificate (mutual TLS) on the address it
      // reaches; BuildStream, on this host, uses the loopback listener.
      nsTls = await createTlsSetup(join(work, 'tls-netns'), { listen: [`${ns.hostAddress}:0`] });
      d = await startTestDaemon((c) => {
        c.execution.pools = [];
        c.listen = ['127.0.0.1:0', `${ns.hostAddress}:0`];
        c.listenerTls = { [`${ns.hostAddress}:0`]: { cert: nsTls.serverCert, key: nsTls.serverKey, clientCa: nsTls.caCert } };
      });
    });
    afterAll(async () => {
      await Promise.all(bots.splice(0).map((b) => b.stop()));
      await d?.stop();
      ns?.remove();
    }, 60_000);

    it('builds remotely with every action run by the bot behind its own casd', async () => {
      const url = `http://${d.address}`;
      const remote = d.daemon.addresses.find((a) => a.startsWith(`${ns.hostAddress}:`))!;
      const seen = (p: string): string => p.slice(root.length);
      const b = await startBotHost(root, work, inside, {
        url: `https://${remote}`,
        id: 'bot-netns',
        platform: X86,
        netns: ns.name,
        serverCert: seen(nsTls.serverCert),
        clientCert: { cert: seen(nsTls.clientCert), key: seen(nsTls.clientKey) },
      });
      bots.push(b);
      const info = await connected(d, 'bot-netns');
      expect(info.host).toContain(ns.nsAddress);

      const token = randomBytes(8).toString('hex');
      const bst = { work: join(work, 'bst'), inside: `${inside}/bst` };
      mkdirSync(join(bst.work, 'home'), { recursive: true });
      mkdirSync(join(bst.work, 'tmp'), { recursive: true });
      const project = join(bst.work, 'project');
      makeBst2Project(root, project, 'reexec-bots');
      writeFileSync(
        join(project, 'elements', 'hello.bst'),
        ['kind: manual', 'build-depends:', '- base.bst', 'config:', '  install-commands:', '  - mkdir -p %{install-root}/out', `  - echo "built by a bot ${token} on $(uname -m)" > %{install-root}/out/hello.txt`, ''].join('\n'),
      );
      const server = `{url: "${url}", push: true}`;
      writeFileSync(join(bst.work, 'buildstream.conf'), bst2UserConfig(bst.inside, { artifacts: server, sourceCaches: server, remoteExecution: { service: `{url: "${url}"}`, actionCache: server } }));
      const build = await runBst2(root, bst.inside, 'buildstream.conf', ['build', 'hello.bst'], 240_000);
      expect(build.code, describeRun('bst build', build)).toBe(0);
      const checkout = await runBst2(root, bst.inside, 'buildstream.conf', ['artifact', 'checkout', 'hello.bst', '--directory', `${bst.inside}/checkout`], 120_000);
      expect(checkout.code, describeRun('bst artifact checkout', checkout)).toBe(0);
      expect(readFileSync(join(bst.work, 'checkout', 'out', 'hello.txt'), 'utf8')).toBe(`built by a bot ${token} on x86_64\n`);
      const ran = d.daemon.execution!.scheduler.list().filter((o) => o.execution.worker !== undefined);
      expect(ran.length).toBeGreaterThan(0);
      for (const o of ran) expect(o.execution.worker).toBe('bot bot-netns');
      expect(d.daemon.execution!.bots.list().find((x) => x.botId === 'bot-netns')!.leasesCompleted).toBeGreaterThan(0);
    });
  });
});
