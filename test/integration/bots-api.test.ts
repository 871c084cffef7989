import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { Digest } from '../../src/digest/digest.js';
import { longrunning, packAny, re, rw } from '../../src/proto.js';
import { botsDefinition } from '../../src/services/bots-service.js';
import type { StatusSnapshot } from '../../src/status/status-snapshot.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { uploadAction, uploadBlob } from '../helpers/exec-client.js';
import { expectGrpcError } from '../helpers/storage.js';
import { waitFor } from '../helpers/wait.js';
import { statusFromMessage } from '../../src/services/admin-messages.js';

/** The Bots service spoken by hand (a fake bot), on a daemon with no local workers. */
const BotsClient = grpc.makeGenericClientConstructor(botsDefinition as unknown as grpc.ServiceDefinition, 'Bots');
const GPU: Array<[string, string]> = [['OSFamily', 'linux'], ['pool', 'gpu']];
const worker = { devices: [{ handle: 'fake', properties: GPU.map(([key, value]) => ({ key, value })) }] };

function botsOf(d: TestDaemon): grpc.Client & Record<string, any> {
  return new BotsClient(d.address, grpc.credentials.createInsecure()) as any;
}

function waitExecution(d: TestDaemon, name: string): Promise<re.ExecuteResponse | undefined> {
  return new Promise((resolve, reject) => {
    let last: longrunning.Operation | undefined;
    const s = (d.clients.execution as any).WaitExecution({ name });
    s.on('data', (op: longrunning.Operation) => (last = op));
    s.on('end', () => resolve(last?.response ? re.ExecuteResponse.decode(last.response.value!) : undefined));
    s.on('error', reject);
  });
}

describe('Bots API (a fake bot, no local workers)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'reexec-bots-api-'));
  const noPools = (c: any): void => {
    c.execution.pools = [];
    // The fake bot's report of a completion is held like an idle poll: briefly here.
    c.execution.bots.pollSeconds = 1;
  };
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('answers bad requests with the right status, and a replaced session is NOT_FOUND', async () => {
    const d = await startTestDaemon(noPools);
    const bots = botsOf(d);
    try {
      await expectGrpcError(call(bots, 'CreateBotSession', { parent: '', botSession: { worker } }), grpc.status.INVALID_ARGUMENT, 'bot_id');
      await expectGrpcError(call(bots, 'UpdateBotSession', { name: 'botSessions/nope', botSession: {} }), grpc.status.NOT_FOUND, 'botSessions/nope');
      const first: any = await call(bots, 'CreateBotSession', { parent: '', botSession: { botId: 'fake', worker } });
      const second: any = await call(bots, 'CreateBotSession', { parent: '', botSession: { botId: 'fake', worker } });
      expect(second.name).not.toBe(first.name);
      await expectGrpcError(call(bots, 'UpdateBotSession', { name: first.name, botSession: { botId: 'fake' } }), grpc.status.NOT_FOUND, first.name);
    } finally {
      bots.close();
      await d.stop();
    }
  });

  it('keeps an action only a bot can run queued across a restart, shows what it waits for, and completes it from the bot', async () => {
    const first = await startTestDaemon(noPools, dataDir);
    let name: string;
    let action: Digest;
    const bots1 = botsOf(first);
    try {
      await call(bots1, 'CreateBotSession', { parent: '', botSession: { botId: 'fake', worker } });
      const root = await uploadBlob(first.clients, re.Directory.encode({}).finish());
      action = await uploadAction(first.clients, root, { args: ['/bin/gpu-job'], platform: GPU });
      name = await new Promise<string>((resolve, reject) => {
        const s = (first.clients.execution as any).Execute({ actionDigest: action.toProto() });
        s.once('data', (op: longrunning.Operation) => resolve(op.name));
        s.on('error', () => undefined);
        s.once('error', reject);
      });
    } finally {
      bots1.close();
      await first.stop();
    }

    const second = await startTestDaemon(noPools, dataDir);
    const bots = botsOf(second);
    try {
      const status = statusFromMessage(await call(second.clients.admin, 'GetStatus', {}));
      expect(status.execution!.queued).toEqual([expect.objectContaining({ operation: name, pool: 'bots', platform: ['OSFamily=linux', 'pool=gpu'] })]);
      expect(status.execution!.pools.map((p) => [p.name, p.queueDepth])).toEqual([['bots', 1]]);
      const done = waitExecution(second, name);

      const session: any = await call(bots, 'CreateBotSession', { parent: '', botSession: { botId: 'fake', worker } });
      const got: any = await call(bots, 'UpdateBotSession', { name: session.name, botSession: { name: session.name, botId: 'fake', status: rw.BotStatus.OK } });
      const lease = got.leases[0];
      expect(lease.state).toBe(rw.LeaseState.PENDING);
      expect(Digest.fromProto(re.Digest.decode(lease.payload.value)).equals(action)).toBe(true);
      await call(bots, 'UpdateBotSession', { name: session.name, botSession: { name: session.name, botId: 'fake', leases: [{ id: lease.id, state: rw.LeaseState.ACTIVE }] } });
      await waitFor('the status to show the lease', async () => {
        const s = statusFromMessage(await call(second.clients.admin, 'GetStatus', {}));
        return s.execution!.bots?.[0]?.lease?.state === 'ACTIVE' && s.execution!.runningTotal === 1;
      });
      const result = packAny('build.bazel.remote.execution.v2.ActionResult', re.ActionResult.encode({ exitCode: 0, stdoutRaw: Buffer.from('gpu') }).finish());
      const after: any = await call(bots, 'UpdateBotSession', {
        name: session.name,
        botSession: { name: session.name, botId: 'fake', leases: [{ id: lease.id, state: rw.LeaseState.COMPLETED, status: { code: 0 }, result }] },
      });
      expect(after.leases).toEqual([]);
      const response = await done;
      expect(response?.status?.code ?? 0).toBe(0);
      expect(response?.result?.exitCode).toBe(0);
      expect(response?.result?.executionMetadata?.worker).toBe('fake');
      // Cached like a local result.
      const cached: any = await call(second.clients.actionCache, 'GetActionResult', { actionDigest: action.toProto() });
      expect(cached.exitCode).toBe(0);
      const metrics = await second.daemon.telemetry.registry.metrics();
      expect(metrics).toMatch(/reexec_bot_leases_completed\{bot="fake"\} 1/);
    } finally {
      bots.close();
      await second.stop();
    }
  });
});
