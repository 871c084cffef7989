import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { statusFromMessage } from '../../src/services/admin-messages.js';

describe('Admin API', () => {
  let d: TestDaemon;
  beforeAll(async () => {
    d = await startTestDaemon();
  });
  afterAll(() => d.stop());

  it('returns a status snapshot naming the listeners and data dir', async () => {
    const res: any = await call(d.clients.admin, 'GetStatus', {});
    const snap = statusFromMessage(res);
    expect(snap.listeners).toEqual([d.address]);
    expect(snap.dataDir).toBe(d.dataDir);
    expect(snap.uptimeSeconds).toBeGreaterThanOrEqual(0);
  });
});
