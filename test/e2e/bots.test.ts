import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Digest } from '../../src/digest/digest.js';
import { type BotHost, processesWithArgs, startBotHost, waitFor } from '../helpers/bots.js';
import { makeClientsWork, prepareClientsRoot } from '../helpers/clients-root.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { uploadBusyboxRoot } from '../helpers/action-batch.js';
import { execute, readBlob, uploadAction } from '../helpers/exec-client.js';
import { isExecutable, removeTree } from '../helpers/run-client.js';
import { call } from '../helpers/storage.js';

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
  const bot = async (d: TestDaemon, id: string, platform = X86, extra: { token?: string; url?: string } = {}): Promise<BotHost> => {
    const b = await startBotHost(root, work, inside, { url: extra.url ?? `http://${d.address}`, id, platform, token: extra.token });
    bots.push(b);
    return b;
  };
  const connected = (d: TestDaemon, id: string) => waitFor(`bot ${id} to connect`, () => d.daemon.execution!.bots.list().find((b) => b.botId === id));

  let tokenFile: string;
  beforeAll(() => {
    ({ work, inside } = makeClientsWork(root, 'reexec-bots-'));
    tokenFile = join(work, 'tokens.yaml');
    writeFileSync(tokenFile, ['bot-token-0123456789abcdef: read, write, worker', 'read-only-token-0123456789: read'].join('\n') + '\n', { mode: 0o600 });
  });
  afterAll(async () => {
    await Promise.all(bots.map((b) => b.stop()));
    removeTree(work);
  });

  describe('a pure controller (execution.pools: [])', () => {
    let d: TestDaemon;
    let rootDigest: Digest;
    beforeAll(async () => {
      d = await startTestDaemon((c) => {
        c.execution.pools = [];
        c.execution.bots.sessionTimeoutSeconds = 5;
      });
      rootDigest = (await uploadBusyboxRoot(d.clients)).tree.root;
    });
    afterAll(async () => {
      await Promise.all(bots.splice(0).map((b) => b.stop()));
      await d.stop();
    });

    it('refuses an action at once while no bot is connected, then runs it on a bot and caches the result', async () => {
      const token = randomBytes(6).toString('hex');
      const action = await uploadAction(d.clients, rootDigest, { args: ['sh', '-c', `echo ${token} > out; echo hi from $(uname -m)`], outputPaths: ['out'], platform: X86 });
      const refused = await execute(d.clients, action);
      expect(refused.error?.code).toBe(9); // FAILED_PRECONDITION
      expect(refused.error?.details).toMatch(/no local worker pools.*no bot is connected/);

      await bot(d, 'bot-a');
      await connected(d, 'bot-a');
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
      for (const pid of processesWithArgs(['sleep', slow])) process.kill(pid, 'SIGKILL');
      expect(processesWithArgs(['sleep', slow])).not.toContain(first);
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
      expect(d.daemon.execution!.bots.list().find((b) => b.botId === 'bot-a')).toBeUndefined();
      expect(d.daemon.execution!.bots.list().find((b) => b.botId === 'bot-b')?.leasesCompleted).toBe(1);
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

  describe('bots next to local slots', () => {
    let d: TestDaemon;
    let rootDigest: Digest;
    beforeAll(async () => {
      d = await startTestDaemon((c) => {
        c.execution.bots.sessionTimeoutSeconds = 5;
        c.auth.tokenFile = tokenFile;
        c.auth.anonymous = ['read', 'write', 'execute'];
      });
      rootDigest = (await uploadBusyboxRoot(d.clients)).tree.root;
    });
    afterAll(async () => {
      await Promise.all(bots.splice(0).map((b) => b.stop()));
      await d.stop();
    });

    it('a property only a bot offers is refused until such a bot connects, then routed to it alone', async () => {
      const gpu: Array<[string, string]> = [['OSFamily', 'linux'], ['pool', 'gpu']];
      const gpuAction = (i: number) => uploadAction(d.clients, rootDigest, { args: ['sh', '-c', `echo gpu ${i}`], platform: gpu, doNotCache: true });
      const plainAction = (i: number) => uploadAction(d.clients, rootDigest, { args: ['sh', '-c', `echo plain ${i}`], platform: X86, doNotCache: true });
      const refused = await execute(d.clients, await gpuAction(0));
      expect(refused.error?.code).toBe(9);
      expect(refused.error?.details).toContain('pool="gpu"');

      await bot(d, 'bot-gpu', gpu, { token: 'bot-token-0123456789abcdef' });
      await connected(d, 'bot-gpu');
      const runs = await Promise.all([...[1, 2, 3].map(async (i) => execute(d.clients, await gpuAction(i))), ...[1, 2, 3].map(async (i) => execute(d.clients, await plainAction(i)))]);
      for (const r of runs) expect(r.response?.result?.exitCode, JSON.stringify(r.error ?? r.response?.status)).toBe(0);
      expect(runs.slice(0, 3).map((r) => r.response!.result!.executionMetadata!.worker)).toEqual(['bot-gpu', 'bot-gpu', 'bot-gpu']);
      for (const r of runs.slice(3)) expect(r.response!.result!.executionMetadata!.worker).toMatch(/^reexec\/native-/);
    });

    it('refuses a bot with a wrong token or a token without the worker right', async () => {
      for (const [id, token, why] of [
        ['bot-bad', 'not-a-token', /UNAUTHENTICATED|16/],
        ['bot-readonly', 'read-only-token-0123456789', /PERMISSION_DENIED|7/],
      ] as const) {
        const b = await bot(d, id, X86, { token });
        await b.exited;
        expect(b.output()).toMatch(why);
        expect(d.daemon.execution!.bots.list().find((x) => x.botId === id)).toBeUndefined();
      }
    });
  });
});
