import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call } from '../../src/client/reapi-client.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';

describe('Capabilities', () => {
  let d: TestDaemon;
  beforeAll(async () => {
    d = await startTestDaemon();
  });
  afterAll(() => d.stop());

  it('advertises what Bazel 7 and BuildStream need', async () => {
    const caps: any = await call(d.clients.capabilities, 'GetCapabilities', { instanceName: '' });
    expect(caps.lowApiVersion).toMatchObject({ major: 2, minor: 0 });
    expect(caps.highApiVersion.major).toBe(2);
    expect(caps.highApiVersion.minor).toBeGreaterThanOrEqual(1);
    expect(caps.cacheCapabilities.digestFunctions).toContain(1);
    expect(caps.cacheCapabilities.actionCacheUpdateCapabilities.updateEnabled).toBe(true);
    expect(caps.cacheCapabilities.symlinkAbsolutePathStrategy).toBe(2);
    // Room for framing under gRPC's default 4 MiB receive limit (see batch-limits.test.ts).
    expect(caps.cacheCapabilities.maxBatchTotalSizeBytes).toBe(4 * 1024 * 1024 - 64 * 1024);
    expect(caps.cacheCapabilities.supportedCompressors).toEqual([1]);
    expect(caps.cacheCapabilities.supportedBatchUpdateCompressors).toEqual([1]);
  });

  it('lists the node properties input staging honours (not platform properties)', async () => {
    const caps: any = await call(d.clients.capabilities, 'GetCapabilities', { instanceName: '' });
    expect(caps.executionCapabilities.execEnabled).toBe(true);
    expect([...caps.executionCapabilities.supportedNodeProperties].sort()).toEqual(['SubtreeReadOnly', 'mtime', 'unix_mode']);
  });

  it('refuses a malformed instance name, naming it', async () => {
    await expect(call(d.clients.capabilities, 'GetCapabilities', { instanceName: 'a//b' })).rejects.toMatchObject({
      code: 3,
      details: expect.stringContaining('"a//b"'),
    });
  });
});
